package controlplane

import (
	"os"
	"sort"
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

// setFields lists the proto paths of every leaf field set in msg (list indices and map keys
// dropped, Anys unpacked, well-known types treated as values).
func setFields(t *testing.T, prefix string, msg protoreflect.Message, out map[string]bool) {
	t.Helper()
	if a, ok := msg.Interface().(*anypb.Any); ok {
		inner, err := a.UnmarshalNew()
		if err != nil {
			t.Fatal(err)
		}
		setFields(t, prefix, inner.ProtoReflect(), out)
		return
	}
	empty := true
	msg.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		empty = false
		path := string(fd.Name())
		if prefix != "" {
			path = prefix + "." + path
		}
		walk := func(m protoreflect.Message) {
			// Well-known types (Duration, wrappers, Struct) are values here; Anys are opened.
			if _, isAny := m.Interface().(*anypb.Any); !isAny && strings.HasPrefix(string(m.Descriptor().FullName()), "google.protobuf.") {
				out[path] = true
				return
			}
			setFields(t, path, m, out)
		}
		switch {
		case fd.IsList() && fd.Message() != nil:
			for i := 0; i < v.List().Len(); i++ {
				walk(v.List().Get(i).Message())
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				walk(mv.Message())
				return true
			})
		case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
			walk(v.Message())
		default:
			out[path] = true
		}
		return true
	})
	if empty && prefix != "" {
		out[prefix] = true // a present empty message such as `ads: {}`
	}
}

// TestFieldsDocumented keeps FIELDS.md in step with the generated resources: the name of every
// leaf field set in any golden configuration must appear in it.
func TestFieldsDocumented(t *testing.T) {
	doc, err := os.ReadFile("FIELDS.md")
	if err != nil {
		t.Fatal(err)
	}
	paths := map[string]bool{}
	for _, tc := range goldenCases {
		r, err := BuildResources(tc.opts)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range r.all() {
			setFields(t, string(m.ProtoReflect().Descriptor().Name()), m.ProtoReflect(), paths)
		}
	}
	sorted := make([]string, 0, len(paths))
	for p := range paths {
		sorted = append(sorted, p)
	}
	sort.Strings(sorted)
	for _, p := range sorted {
		leaf := p[strings.LastIndex(p, ".")+1:]
		if !strings.Contains(string(doc), leaf) {
			t.Errorf("FIELDS.md does not document %s", p)
		}
	}
	if len(sorted) < 60 {
		t.Errorf("only %d field paths found; the walk is broken", len(sorted))
	}
}
