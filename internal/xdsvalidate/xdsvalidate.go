// Package xdsvalidate checks Envoy configuration messages the way Envoy does
// when it loads them: the protoc-gen-validate rules of every message,
// including the typed configs packed in Anys, which a message's own
// Validate() does not open (Deep), and the deprecated fields and enum
// values Envoy warns about, or refuses when they are disallowed by default
// (Deprecated).
package xdsvalidate

import (
	"errors"
	"fmt"
	"sort"

	"github.com/envoyproxy/go-control-plane/envoy/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
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

// Deprecated lists every deprecated field and enum value msg uses, at any
// depth, Anys unpacked, sorted and without duplicates; the error reports an
// Any whose type is not linked into the program.
//
// It follows Envoy's own check (UnexpectedFieldProtoVisitor::onField and
// checkForDeprecatedNonRepeatedEnumValue), which warns on every use and
// fails the configuration for uses disallowed by default:
//   - a set field whose options say deprecated, or that carries
//     envoy.annotations.deprecated_at_minor_version;
//   - a singular enum field whose value — even the default of an unset
//     field, which Envoy reports as "the default now-deprecated value" — is
//     deprecated or carries envoy.annotations.deprecated_at_minor_version_enum;
//     and, beyond Envoy, each value of a repeated enum field.
//
// https://github.com/envoyproxy/envoy/blob/v1.37.0/source/common/protobuf/utility.cc
func Deprecated(msg proto.Message) ([]string, error) {
	found := map[string]bool{}
	var errs []error
	deprecatedWalk(msg.ProtoReflect(), found, &errs)
	out := make([]string, 0, len(found))
	for f := range found {
		out = append(out, f)
	}
	sort.Strings(out)
	return out, errors.Join(errs...)
}

func deprecatedWalk(msg protoreflect.Message, found map[string]bool, errs *[]error) {
	if a, ok := msg.Interface().(*anypb.Any); ok {
		inner, err := a.UnmarshalNew()
		if err != nil {
			*errs = append(*errs, fmt.Errorf("unpack %s: %w", a.GetTypeUrl(), err))
			return
		}
		deprecatedWalk(inner.ProtoReflect(), found, errs)
		return
	}
	enumValue := func(fd protoreflect.FieldDescriptor, n protoreflect.EnumNumber, isDefault bool) {
		ev := fd.Enum().Values().ByNumber(n)
		if ev == nil || !enumValueDeprecated(ev) {
			return
		}
		what := "value"
		if isDefault {
			what = "default value"
		}
		found[fmt.Sprintf("%s: deprecated enum %s %s", fd.FullName(), what, ev.FullName())] = true
	}
	fields := msg.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if fd.Kind() == protoreflect.EnumKind && fd.Cardinality() != protoreflect.Repeated {
			enumValue(fd, msg.Get(fd).Enum(), !msg.Has(fd))
		}
		if !msg.Has(fd) {
			continue
		}
		if fieldDeprecated(fd) {
			found[fmt.Sprintf("%s: deprecated field", fd.FullName())] = true
		}
		v := msg.Get(fd)
		switch {
		case fd.IsList():
			for j := 0; j < v.List().Len(); j++ {
				switch fd.Kind() {
				case protoreflect.MessageKind, protoreflect.GroupKind:
					deprecatedWalk(v.List().Get(j).Message(), found, errs)
				case protoreflect.EnumKind:
					enumValue(fd, v.List().Get(j).Enum(), false)
				}
			}
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					deprecatedWalk(mv.Message(), found, errs)
					return true
				})
			}
		case fd.Message() != nil:
			deprecatedWalk(v.Message(), found, errs)
		}
	}
}

func fieldDeprecated(fd protoreflect.FieldDescriptor) bool {
	o, ok := fd.Options().(*descriptorpb.FieldOptions)
	if !ok || o == nil {
		return false
	}
	return o.GetDeprecated() || proto.GetExtension(o, annotations.E_DeprecatedAtMinorVersion).(string) != ""
}

func enumValueDeprecated(ev protoreflect.EnumValueDescriptor) bool {
	o, ok := ev.Options().(*descriptorpb.EnumValueOptions)
	if !ok || o == nil {
		return false
	}
	return o.GetDeprecated() || proto.GetExtension(o, annotations.E_DeprecatedAtMinorVersionEnum).(string) != ""
}
