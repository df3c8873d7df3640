package headers

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

func TestValue(t *testing.T) {
	tests := []struct {
		name string
		h    *corev3.HeaderValue
		want string
	}{
		{"raw_value", &corev3.HeaderValue{Key: "a", RawValue: []byte("raw")}, "raw"},
		{"raw_value wins", &corev3.HeaderValue{Key: "a", RawValue: []byte("raw"), Value: "v"}, "raw"},
		{"value only", &corev3.HeaderValue{Key: "a", Value: "v"}, "v"},
		{"empty", &corev3.HeaderValue{Key: "a"}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(Value(tc.h)); got != tc.want {
				t.Fatalf("Value = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestSet(t *testing.T) {
	o := Set("x-k", []byte("v"))
	//lint:ignore SA1019 the deprecated field is the one Envoy's ext_proc reads.
	if o.GetHeader().GetKey() != "x-k" || string(o.GetHeader().GetRawValue()) != "v" || o.GetHeader().GetValue() != "" || o.GetAppend() == nil || o.GetAppend().GetValue() {
		t.Fatalf("Set = %v; want raw_value only and append false", o)
	}
}
