package extprocrules

import (
	"fmt"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// FuzzHeaderMutation applies arbitrary (untrusted, processor-supplied)
// header mutations: it must never panic, and whatever it accepts leaves only
// valid header names and values behind.
func FuzzHeaderMutation(f *testing.F) {
	seeds := []*extprocsvc.HeaderMutation{
		{
			RemoveHeaders: []string{"x-ccproxy-route"},
			SetHeaders: []*corev3.HeaderValueOption{{
				Header: &corev3.HeaderValue{Key: "x-ccproxy-route", RawValue: []byte("plan")},
				Append: wrapperspb.Bool(false),
			}},
		},
		{RemoveHeaders: []string{":path", "host", "x-a", "bad name"}},
		{SetHeaders: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: ":authority", RawValue: []byte("x")}}}},
		{SetHeaders: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-a", RawValue: []byte("a\nb")}}}},
		{SetHeaders: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "content-length", RawValue: []byte("12")}}}},
	}
	for _, s := range seeds {
		data, err := proto.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, false)
	}
	f.Fuzz(func(t *testing.T, data []byte, replacing bool) {
		var m extprocsvc.HeaderMutation
		if err := proto.Unmarshal(data, &m); err != nil {
			return
		}
		h := &HeaderMap{entries: []headerEntry{{":authority", "a"}, {":path", "/"}, {":method", "GET"}, {"content-length", "3"}}}
		if err := ApplyHeaderMutation(&m, h, replacing, MutationRules{}, false); err != nil {
			return
		}
		for _, e := range h.entries {
			if !validHeaderName(e.key) || !validHeaderValue(e.value) || strings.ToLower(e.key) != e.key {
				t.Fatalf("invalid header left behind: %q: %q", e.key, e.value)
			}
		}
		if h.Value(":authority") != "a" || h.Value(":method") != "GET" && !replacing {
			t.Fatalf("default rules let a routing header change: %v", h.entries)
		}
	})
}

func set(key, value string, appendMode bool) *corev3.HeaderValueOption {
	//lint:ignore SA1019 ext_proc reads append, not its replacement append_action.
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: key, RawValue: []byte(value)}, Append: wrapperspb.Bool(appendMode)}
}

func headers(kv ...string) *HeaderMap {
	h := &HeaderMap{}
	for i := 0; i < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

func render(h *HeaderMap) string {
	var b strings.Builder
	for k, v := range h.All() {
		b.WriteString(k + "=" + v + ";")
	}
	return b.String()
}

func TestApplyHeaderMutation(t *testing.T) {
	tests := []struct {
		name              string
		mut               *extprocsvc.HeaderMutation
		replacing         bool
		dropContentLength bool
		want              string // headers afterwards
		wantErr           string // substring; "" for success
	}{
		{
			name: "removals before sets, set replaces every value at the first position",
			mut:  &extprocsvc.HeaderMutation{RemoveHeaders: []string{"X-Gone"}, SetHeaders: []*corev3.HeaderValueOption{set("X-Multi", "new", false), set("x-gone", "back", false)}},
			want: ":authority=a;:path=/;:method=POST;x-multi=new;content-length=3;x-gone=back;",
		},
		{
			name: "append adds a value",
			mut:  &extprocsvc.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{set("x-multi", "3", true)}},
			want: ":authority=a;:path=/;:method=POST;x-multi=1;x-gone=g;x-multi=2;content-length=3;x-multi=3;",
		},
		{
			name: "routing headers and x-envoy-* are ignored by default, :path is not",
			mut: &extprocsvc.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{
				set(":authority", "evil", false), set(":method", "GET", false), set("x-envoy-retry-on", "5xx", false), set(":path", "/v1", false)}},
			want: ":authority=a;:path=/v1;:method=POST;x-multi=1;x-gone=g;x-multi=2;content-length=3;",
		},
		{
			name:      "CONTINUE_AND_REPLACE may change :method",
			mut:       &extprocsvc.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{set(":method", "GET", false)}},
			replacing: true,
			want:      ":authority=a;:path=/;:method=GET;x-multi=1;x-gone=g;x-multi=2;content-length=3;",
		},
		{
			name:              "content-length writes skipped where the filter drops it",
			mut:               &extprocsvc.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{set("content-length", "99", false)}},
			dropContentLength: true,
			want:              ":authority=a;:path=/;:method=POST;x-multi=1;x-gone=g;x-multi=2;content-length=3;",
		},
		{
			name: "pseudo-headers cannot be removed",
			mut:  &extprocsvc.HeaderMutation{RemoveHeaders: []string{":path", "host"}},
			want: ":authority=a;:path=/;:method=POST;x-multi=1;x-gone=g;x-multi=2;content-length=3;",
		},
		{
			name: "raw_value only: value is ignored",
			mut: &extprocsvc.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{
				{Header: &corev3.HeaderValue{Key: "x-a", Value: "v", RawValue: []byte("r")}}, {Header: &corev3.HeaderValue{Key: "x-b", Value: "v"}}}},
			want: ":authority=a;:path=/;:method=POST;x-multi=1;x-gone=g;x-multi=2;content-length=3;x-a=r;x-b=;",
		},
		{
			name:    "invalid value",
			mut:     &extprocsvc.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{set("x-a", "a\r\nb", false)}},
			wantErr: "invalid character in set_headers mutation",
		},
		{
			name:    "invalid status",
			mut:     &extprocsvc.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{set(":status", "99", false)}},
			wantErr: "invalid attempt to modify :status",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := headers(":authority", "a", ":path", "/", ":method", "POST", "x-multi", "1", "x-gone", "g", "x-multi", "2", "content-length", "3")
			err := ApplyHeaderMutation(tc.mut, h, tc.replacing, MutationRules{}, tc.dropContentLength)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := render(h); got != tc.want {
				t.Errorf("headers = %s\nwant      %s", got, tc.want)
			}
		})
	}
}

func TestApplyBodyMutation(t *testing.T) {
	body := []byte("original")
	tests := []struct {
		name string
		mut  *extprocsvc.BodyMutation
		want []byte
	}{
		{"none", nil, body},
		{"replace", &extprocsvc.BodyMutation{Mutation: &extprocsvc.BodyMutation_Body{Body: []byte("new")}}, []byte("new")},
		{"clear", &extprocsvc.BodyMutation{Mutation: &extprocsvc.BodyMutation_ClearBody{ClearBody: true}}, nil},
		{"clear false", &extprocsvc.BodyMutation{Mutation: &extprocsvc.BodyMutation_ClearBody{ClearBody: false}}, body},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ApplyBodyMutation(tc.mut, body); string(got) != string(tc.want) || (got == nil) != (tc.want == nil) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestEffectiveModeOverride(t *testing.T) {
	configured := &extprocv3.ProcessingMode{
		RequestHeaderMode: extprocv3.ProcessingMode_SEND, ResponseHeaderMode: extprocv3.ProcessingMode_SEND,
		RequestBodyMode: extprocv3.ProcessingMode_BUFFERED, ResponseBodyMode: extprocv3.ProcessingMode_BUFFERED,
		RequestTrailerMode: extprocv3.ProcessingMode_SKIP, ResponseTrailerMode: extprocv3.ProcessingMode_SKIP,
	}
	got := EffectiveModeOverride(&extprocv3.ProcessingMode{ResponseBodyMode: extprocv3.ProcessingMode_STREAMED}, configured)
	want := &extprocv3.ProcessingMode{
		RequestHeaderMode: extprocv3.ProcessingMode_SEND, ResponseHeaderMode: extprocv3.ProcessingMode_SEND,
		RequestBodyMode: extprocv3.ProcessingMode_NONE, ResponseBodyMode: extprocv3.ProcessingMode_STREAMED,
		RequestTrailerMode: extprocv3.ProcessingMode_SKIP, ResponseTrailerMode: extprocv3.ProcessingMode_SKIP,
	}
	if !proto.Equal(got, want) {
		t.Errorf("got %v\nwant %v", got, want)
	}
}

func TestRemovesContentLength(t *testing.T) {
	tests := []struct {
		mode        extprocv3.ProcessingMode_BodySendMode
		sendHeaders bool
		want        bool
	}{
		{extprocv3.ProcessingMode_NONE, true, false},
		{extprocv3.ProcessingMode_BUFFERED, true, false},
		{extprocv3.ProcessingMode_BUFFERED, false, true},
		{extprocv3.ProcessingMode_STREAMED, true, true},
		{extprocv3.ProcessingMode_BUFFERED_PARTIAL, true, true},
		{extprocv3.ProcessingMode_FULL_DUPLEX_STREAMED, true, true},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s/send_headers=%v", tc.mode, tc.sendHeaders), func(t *testing.T) {
			if got := RemovesContentLength(tc.mode, tc.sendHeaders); got != tc.want {
				t.Errorf("RemovesContentLength(%s, %v) = %v, want %v", tc.mode, tc.sendHeaders, got, tc.want)
			}
		})
	}
}
