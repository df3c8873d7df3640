package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/ccproxy/ccproxy/internal/store"
)

// problemTypeBase prefixes the "type" URI of every problem.
const problemTypeBase = "https://ccproxy.dev/problems/"

// fieldError is one entry of a validation problem's "errors" list.
type fieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// problemDoc is an RFC 9457 problem details document.
type problemDoc struct {
	Type   string       `json:"type"`
	Title  string       `json:"title"`
	Status int          `json:"status"`
	Detail string       `json:"detail,omitempty"`
	Errors []fieldError `json:"errors,omitempty"`
}

// problemTypes names the problem type of each status the API returns.
var problemTypes = map[int]string{
	http.StatusBadRequest:            "bad-request",
	http.StatusUnauthorized:          "unauthorized",
	http.StatusForbidden:             "forbidden",
	http.StatusNotFound:              "not-found",
	http.StatusMethodNotAllowed:      "method-not-allowed",
	http.StatusConflict:              "conflict",
	http.StatusRequestEntityTooLarge: "body-too-large",
	http.StatusUnsupportedMediaType:  "unsupported-media-type",
	http.StatusUnprocessableEntity:   "validation-failed",
	http.StatusTooManyRequests:       "too-many-requests",
	http.StatusInternalServerError:   "internal",
	http.StatusServiceUnavailable:    "unavailable",
}

func (s *Server) problem(w http.ResponseWriter, _ *http.Request, status int, title, detail string, errs ...fieldError) {
	t, ok := problemTypes[status]
	if !ok {
		t = "error"
	}
	writeJSONType(w, "application/problem+json", status, problemDoc{
		Type: problemTypeBase + t, Title: title, Status: status, Detail: detail, Errors: errs,
	})
}

func (s *Server) invalid(w http.ResponseWriter, r *http.Request, errs []fieldError) {
	s.problem(w, r, http.StatusUnprocessableEntity, "validation failed", "the request has invalid fields", errs...)
}

// storeError answers for an error from the store or the transaction.
func (s *Server) storeError(w http.ResponseWriter, r *http.Request, err error) {
	var ie *invalidError
	switch {
	case errors.As(err, &ie):
		s.invalid(w, r, ie.errs)
	case errors.Is(err, errHashBusy):
		w.Header().Set("Retry-After", "1")
		s.problem(w, r, http.StatusTooManyRequests, "server busy", "too many password checks are in progress; try again shortly")
	case errors.Is(err, store.ErrNotFound):
		s.problem(w, r, http.StatusNotFound, "not found", "")
	case errors.Is(err, store.ErrConflict):
		s.problem(w, r, http.StatusConflict, "conflict", conflictDetail(err))
	case errors.Is(err, store.ErrInvalid):
		s.problem(w, r, http.StatusUnprocessableEntity, "validation failed", strings.TrimPrefix(err.Error(), "store: "))
	default:
		s.log.LogAttrs(r.Context(), slog.LevelError, "admin: request failed",
			slog.String("route", r.Pattern), slog.String("error", err.Error()))
		s.problem(w, r, http.StatusInternalServerError, "internal error", "")
	}
}

// conflictDetail keeps the store's explanation but not the Postgres
// constraint text after it.
func conflictDetail(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, store.ErrConflict.Error()); i >= 0 {
		msg = msg[i+len(store.ErrConflict.Error()):]
	}
	msg = strings.TrimLeft(msg, ": ")
	if msg == "" || strings.Contains(msg, "duplicate key") || strings.Contains(msg, "violates") {
		return "the change conflicts with an existing record"
	}
	return msg
}

// invalidError carries field errors found where the handler cannot answer
// at once: inside a transaction, which it must abort, or in a pager.
// storeError answers it as invalid does.
type invalidError struct{ errs []fieldError }

func (e *invalidError) Error() string { return "validation failed" }

func writeJSON(w http.ResponseWriter, status int, v any) {
	writeJSONType(w, "application/json", status, v)
}

func writeJSONType(w http.ResponseWriter, ctype string, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", ctype)
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// decode reads the JSON body into dst strictly: application/json only,
// valid UTF-8, one value, at most maxBodyBytes, and member names exactly as
// the API spells them, each at most once per object (checkStrictJSON), no
// NUL in strings. It answers the problem itself and returns false on
// failure.
func (s *Server) decode(w http.ResponseWriter, r *http.Request, dst any) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		s.problem(w, r, http.StatusUnsupportedMediaType, "unsupported media type", "the body must be application/json")
		return false
	}
	body, err := io.ReadAll(r.Body)
	if err == nil && !utf8.Valid(body) {
		s.problem(w, r, http.StatusBadRequest, "malformed JSON", "the body is not valid UTF-8")
		return false
	}
	if err == nil {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		err = dec.Decode(dst)
		if err == nil {
			if _, extra := dec.Token(); extra != io.EOF {
				err = errors.New("trailing data after the JSON value")
			}
		}
	}
	if err == nil {
		err = checkStrictJSON(body, reflect.TypeOf(dst))
		var ske *strictKeyError
		if errors.As(err, &ske) {
			s.problem(w, r, http.StatusBadRequest, ske.title, "", fieldError{Field: ske.field, Message: ske.msg})
			return false
		}
	}
	if err == nil {
		return true
	}
	var (
		mbe *http.MaxBytesError
		se  *json.SyntaxError
		te  *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &mbe):
		s.problem(w, r, http.StatusRequestEntityTooLarge, "body too large",
			"the body exceeds "+strconv.FormatInt(mbe.Limit, 10)+" bytes")
	case errors.As(err, &se):
		s.problem(w, r, http.StatusBadRequest, "malformed JSON", "syntax error at byte "+strconv.FormatInt(se.Offset, 10))
	case errors.As(err, &te):
		s.problem(w, r, http.StatusBadRequest, "malformed JSON", "",
			fieldError{Field: te.Field, Message: "must be " + jsonKind(te.Type.Kind().String())})
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		s.problem(w, r, http.StatusBadRequest, "malformed JSON", "the body is empty or truncated")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		f := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		s.problem(w, r, http.StatusBadRequest, "unknown field", "", fieldError{Field: f, Message: "unknown field"})
	default:
		s.problem(w, r, http.StatusBadRequest, "malformed JSON", "the body is not valid JSON")
	}
	return false
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "int", "int64", "int32", "uint", "uint64", "float64":
		return "a number"
	case "slice":
		return "an array"
	case "map", "struct":
		return "an object"
	}
	return "of another type"
}

// optional is a PATCH field: Set tells an absent field from a present one,
// Null a present null.
type optional[T any] struct {
	Value T
	Set   bool
	Null  bool
}

// UnmarshalJSON implements json.Unmarshaler; encoding/json calls it for
// null too, which is what lets Set tell null from absent.
func (o *optional[T]) UnmarshalJSON(b []byte) error {
	// A repeated member replaces the earlier one, as for any other field:
	// nothing of it (its null, its value) may survive.
	*o = optional[T]{Set: true}
	if string(b) == "null" {
		o.Null = true
		return nil
	}
	return json.Unmarshal(b, &o.Value)
}

// innerJSONType tells strict decoding (checkStrictJSON) that an
// optional[T]'s JSON is T's.
func (optional[T]) innerJSONType() reflect.Type { return reflect.TypeFor[T]() }

// pathID parses the {id} path value; it answers 404 itself when it is not a
// UUID, because no such resource can exist.
func (s *Server) pathID(w http.ResponseWriter, r *http.Request) (uuid.UUID, bool) {
	id, err := uuid.Parse(r.PathValue("id"))
	if err != nil || len(r.PathValue("id")) != 36 {
		s.problem(w, r, http.StatusNotFound, "not found", "no resource has this id")
		return uuid.Nil, false
	}
	return id, true
}
