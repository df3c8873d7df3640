// Package xdsvalidate checks Envoy configuration messages the way Envoy does
// when it loads them: the protoc-gen-validate rules of every message,
// including the typed configs packed in Anys, which a message's own
// Validate() does not open.
package xdsvalidate

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

type validator interface{ ValidateAll() error }

// Deep validates msg and every message below it. It returns how many
// messages carried validation rules (so a caller can tell that something
// was checked) and every violation found, joined.
func Deep(msg proto.Message) (checked int, err error) {
	var errs []error
	checked = walk(msg.ProtoReflect(), &errs)
	return checked, errors.Join(errs...)
}

func walk(msg protoreflect.Message, errs *[]error) int {
	n := 0
	if v, ok := msg.Interface().(validator); ok {
		n++
		if err := v.ValidateAll(); err != nil {
			*errs = append(*errs, fmt.Errorf("%s: %w", msg.Descriptor().FullName(), err))
		}
	}
	if a, ok := msg.Interface().(*anypb.Any); ok {
		inner, err := a.UnmarshalNew()
		if err != nil {
			*errs = append(*errs, fmt.Errorf("unpack %s: %w", a.GetTypeUrl(), err))
			return n
		}
		return n + walk(inner.ProtoReflect(), errs)
	}
	msg.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			for i := 0; i < v.List().Len(); i++ {
				n += walk(v.List().Get(i).Message(), errs)
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				n += walk(mv.Message(), errs)
				return true
			})
		case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
			n += walk(v.Message(), errs)
		}
		return true
	})
	return n
}
