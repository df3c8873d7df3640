package admin

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
)

// strictKeyError is a member name strict decoding refuses.
type strictKeyError struct {
	title, field, msg string
}

func (e *strictKeyError) Error() string { return e.field + ": " + e.msg }

// checkStrictJSON walks the JSON value data, which encoding/json has
// already decoded into a value of type t, and refuses what encoding/json
// lets through: a member name repeated in one object (encoding/json keeps
// the last, so {"name":"x","name":"y"} says two things), a name that
// matches a struct field only case-insensitively (encoding/json matches
// {"Name":"y"} to name, so {"name":"x","Name":"y"} created "y"), and NUL
// in any string (Postgres refuses it in text). Go 1.26's encoding/json/v2,
// which is case-sensitive and refuses duplicates itself, still needs
// GOEXPERIMENT=jsonv2, so this pre-pass does it with the v1 tokenizer.
func checkStrictJSON(data []byte, t reflect.Type) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	return strictValue(dec, t, "")
}

func strictValue(dec *json.Decoder, t reflect.Type, path string) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	switch v := tok.(type) {
	case json.Delim:
		t = jsonTarget(t)
		if v == '[' {
			var elem reflect.Type
			if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
				elem = t.Elem()
			}
			for dec.More() {
				if err := strictValue(dec, elem, path); err != nil {
					return err
				}
			}
			_, err := dec.Token()
			return err
		}
		return strictObject(dec, t, path)
	case string:
		if strings.IndexByte(v, 0) >= 0 {
			return &strictKeyError{"malformed JSON", fieldPath(path, ""), "strings must not contain NUL characters"}
		}
	}
	return nil
}

func strictObject(dec *json.Decoder, t reflect.Type, path string) error {
	var fields map[string]reflect.Type
	isMap := false
	if t != nil {
		switch t.Kind() {
		case reflect.Struct:
			fields = structFields(t)
		case reflect.Map:
			isMap = true
		}
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key, _ := tok.(string)
		p := fieldPath(path, key)
		if strings.IndexByte(key, 0) >= 0 {
			return &strictKeyError{"malformed JSON", p, "names must not contain NUL characters"}
		}
		if seen[key] {
			return &strictKeyError{"duplicate field", p, "appears more than once"}
		}
		seen[key] = true
		var ft reflect.Type
		switch {
		case fields != nil:
			var ok bool
			if ft, ok = fields[key]; !ok {
				msg := "unknown field"
				for name := range fields {
					if strings.EqualFold(name, key) {
						msg = "unknown field (names are case-sensitive: " + strconv.Quote(name) + ")"
					}
				}
				return &strictKeyError{"unknown field", p, msg}
			}
		case isMap:
			ft = t.Elem()
		}
		if err := strictValue(dec, ft, p); err != nil {
			return err
		}
	}
	_, err := dec.Token()
	return err
}

// fieldPath names a member the way encoding/json's errors do: dotted.
func fieldPath(path, key string) string {
	if path == "" {
		return key
	}
	if key == "" {
		return path
	}
	return path + "." + key
}

// innerJSONType is implemented by wrappers whose JSON is that of another
// type (optional[T]).
type innerJSONType interface{ innerJSONType() reflect.Type }

// jsonTarget is the type whose members a JSON object or array decodes
// into: pointers and wrappers removed; nil when unknown (an interface, or a
// type with its own UnmarshalJSON), where only duplicates and NUL are
// checked.
func jsonTarget(t reflect.Type) reflect.Type {
	innerJSONTypeType := reflect.TypeFor[innerJSONType]()
	unmarshalerType := reflect.TypeFor[json.Unmarshaler]()
	for t != nil {
		switch {
		case t.Implements(innerJSONTypeType):
			t = reflect.Zero(t).Interface().(innerJSONType).innerJSONType()
		case reflect.PointerTo(t).Implements(innerJSONTypeType):
			t = reflect.Zero(t).Interface().(innerJSONType).innerJSONType()
		case t.Kind() == reflect.Pointer:
			t = t.Elem()
		case t.Implements(unmarshalerType) || reflect.PointerTo(t).Implements(unmarshalerType):
			return nil
		default:
			return t
		}
	}
	return nil
}

// structFields maps the JSON names of t's fields, embedded structs' fields
// promoted, to their types, as encoding/json names them.
func structFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for f := range t.Fields() {
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			et := f.Type
			if et.Kind() == reflect.Pointer {
				et = et.Elem()
			}
			if et.Kind() == reflect.Struct {
				for n, ft := range structFields(et) {
					if _, ok := out[n]; !ok {
						out[n] = ft
					}
				}
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}
