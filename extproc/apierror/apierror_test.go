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

func TestBodyWithRequestID(t *testing.T) {
	tests := []struct {
		name, typ, msg, id, want string
	}{
		{"with id", Timeout, "ccproxy: upstream timed out", "5e1f",
			`{"type":"error","error":{"type":"timeout_error","message":"ccproxy: upstream timed out"},"request_id":"5e1f"}`},
		{"empty id omitted", API, "x", "",
			`{"type":"error","error":{"type":"api_error","message":"x"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(BodyWithRequestID(tt.typ, tt.msg, tt.id)); got != tt.want {
				t.Errorf("BodyWithRequestID = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestTypeForStatus(t *testing.T) {
	tests := map[int]string{
		400: InvalidRequest, 401: Authentication, 402: Billing, 403: Permission, 404: NotFound,
		408: Timeout, 409: InvalidRequest, 413: RequestTooLarge, 429: RateLimit,
		500: API, 502: API, 503: API, 504: Timeout, 507: API, 529: Overloaded,
	}
	for status, want := range tests {
		if got := TypeForStatus(status); got != want {
			t.Errorf("TypeForStatus(%d) = %q, want %q", status, got, want)
		}
	}
}
