package apierror

import "testing"

func TestBody(t *testing.T) {
	tests := []struct {
		name, typ, msg, want string
	}{
		{"auth", Authentication, "ccproxy: invalid access key",
			`{"type":"error","error":{"type":"authentication_error","message":"ccproxy: invalid access key"}}`},
		{"escaping", NotFound, `a "quoted" <path>` + "\n",
			`{"type":"error","error":{"type":"not_found_error","message":"a \"quoted\" <path>\n"}}`},
		{"invalid utf-8", API, "bad \xff byte",
			`{"type":"error","error":{"type":"api_error","message":"bad \ufffd byte"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(Body(tt.typ, tt.msg)); got != tt.want {
				t.Errorf("Body(%q, %q) = %s, want %s", tt.typ, tt.msg, got, tt.want)
			}
		})
	}
}
