package admin

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// fuzzBody has every shape request bodies use: plain, pointer, optional,
// slice, map, optional map and nested struct members.
type fuzzBody struct {
	Name    optional[string]            `json:"name"`
	Count   *int                        `json:"count"`
	Aliases []string                    `json:"aliases"`
	Regions map[string]string           `json:"regions"`
	Labels  optional[map[string]string] `json:"labels"`
	Inner   struct {
		A string `json:"a"`
	} `json:"inner"`
}

// strictOracle decides, without the request types, whether body is a
// strictly valid fuzzBody: one JSON value of valid UTF-8, no string with
// NUL, no object with a repeated name, and names exactly as fuzzBody
// spells them at the top and inside "inner" (map members are free).
func strictOracle(body []byte) bool {
	if !utf8.Valid(body) || !json.Valid(body) {
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	var walk func(names map[string]bool, children map[string]map[string]bool) bool
	walk = func(names map[string]bool, children map[string]map[string]bool) bool {
		tok, _ := dec.Token()
		switch v := tok.(type) {
		case string:
			return !strings.ContainsRune(v, 0)
		case json.Delim:
			if v == '[' {
				for dec.More() {
					if !walk(nil, nil) {
						return false
					}
				}
				dec.Token()
				return true
			}
			seen := map[string]bool{}
			for dec.More() {
				k, _ := dec.Token()
				key := k.(string)
				if seen[key] || strings.ContainsRune(key, 0) || names != nil && !names[key] {
					return false
				}
				seen[key] = true
				if !walk(children[key], nil) {
					return false
				}
			}
			dec.Token()
		}
		return true
	}
	top := map[string]bool{"name": true, "count": true, "aliases": true, "regions": true, "labels": true, "inner": true}
	return walk(top, map[string]map[string]bool{"inner": {"a": true}})
}

// FuzzStrictDecode feeds untrusted bodies to the API's JSON decoder: it
// accepts exactly the strictly valid ones (strictOracle) whose members
// encoding/json can decode, decodes those as encoding/json does, and
// answers everything else with a 400 or 413 problem.
func FuzzStrictDecode(f *testing.F) {
	for _, s := range []string{
		`{}`, `null`, `{"name":"x"}`, `{"name":"x","Name":"y"}`, `{"NAME":"y"}`, `{"name":"x","name":"y"}`,
		`{"name":null,"name":"a"}`, `{"regions":{"us-east-1":"a","us-east-1":"b"}}`, `{"regions":{"a":"1","A":"2"}}`,
		`{"labels":{"k":"v","k":"w"}}`, `{"labels":null}`, `{"inner":{"a":"x","A":"y"}}`, `{"inner":{"a":"x"}}`,
		`{"aliases":["a","b"]}`, `{"aliases":["a\u0000"]}`, `{"name":"a\u0000"}`, `{"count":1}`, `{"count":1.5}`,
		`{"count":1}{"count":2}`, `{"name":"x"} `, "{\"name\":\"\xff\"}", `{"unknown":1}`, `{"inner":{"b":1}}`, `[]`, `"x"`, ``,
		`{"name":"x","count":null,"count":2}`, `{"regions":{"\u0000":"x"}}`,
	} {
		f.Add(s)
	}
	s := &Server{}
	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequest("POST", "/", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		req.Body = http.MaxBytesReader(rec, req.Body, maxBodyBytes)
		var got fuzzBody
		ok := s.decode(rec, req, &got)

		var std fuzzBody
		dec := json.NewDecoder(strings.NewReader(body))
		dec.DisallowUnknownFields()
		stdErr := dec.Decode(&std)
		wantOK := len(body) <= maxBodyBytes && strictOracle([]byte(body)) && stdErr == nil
		if ok != wantOK {
			t.Fatalf("decode(%q) = %v, want %v (std error %v); answer %d %s", body, ok, wantOK, stdErr, rec.Code, rec.Body)
		}
		if ok {
			if !reflect.DeepEqual(got, std) {
				t.Fatalf("decode(%q) = %+v, encoding/json gives %+v", body, got, std)
			}
			return
		}
		res := rec.Result()
		b, _ := io.ReadAll(res.Body)
		var p problemDoc
		if (res.StatusCode != http.StatusBadRequest && res.StatusCode != http.StatusRequestEntityTooLarge) ||
			res.Header.Get("Content-Type") != "application/problem+json" || json.Unmarshal(b, &p) != nil || p.Status != res.StatusCode {
			t.Fatalf("decode(%q) refused with %d %s %s", body, res.StatusCode, res.Header.Get("Content-Type"), b)
		}
	})
}
