// Package headers owns how extproc reads and writes header values in
// ext_proc messages, where Envoy's conventions differ from what the proto
// suggests (docs/envoy.md, "The ext_proc stream").
package headers

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Value returns a header's value. Envoy sends values in raw_value; value is
// only read as a fallback for older or differently configured Envoys.
func Value(h *corev3.HeaderValue) []byte {
	if len(h.RawValue) > 0 || h.Value == "" {
		return h.RawValue
	}
	return []byte(h.Value)
}

// Set returns a mutation that overwrites key with value. Envoy's ext_proc
// reads the value from raw_value only (a mutation carrying only value sets
// an empty header) and ignores append_action, honouring the deprecated
// append flag, so that is what is set (mutation_utils.cc,
// applyHeaderMutations).
func Set(key string, value []byte) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header: &corev3.HeaderValue{Key: key, RawValue: value},
		//lint:ignore SA1019 ext_proc reads append, not its replacement append_action.
		Append: wrapperspb.Bool(false),
	}
}
