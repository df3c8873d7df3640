package breakerkeys_test

import (
	"testing"

	"github.com/google/uuid"

	"github.com/ccproxy/ccproxy/internal/breakerkeys"
)

func TestKeys(t *testing.T) {
	id := uuid.MustParse("0b7e8f3a-3c0e-4b8e-9a43-1f2d3c4b5a69")
	if got, want := breakerkeys.Open("p:", id), "p:breaker:{0b7e8f3a-3c0e-4b8e-9a43-1f2d3c4b5a69}:open"; got != want {
		t.Fatalf("Open = %q, want %q", got, want)
	}
	if got := breakerkeys.OpenPattern("p:"); got != "p:breaker:{*}:open" {
		t.Fatalf("OpenPattern = %q", got)
	}
	for _, tt := range []struct {
		key string
		id  uuid.UUID
		ok  bool
	}{
		{"p:breaker:{0b7e8f3a-3c0e-4b8e-9a43-1f2d3c4b5a69}:open", id, true},
		{"q:breaker:{0b7e8f3a-3c0e-4b8e-9a43-1f2d3c4b5a69}:open", uuid.Nil, false},
		{"p:breaker:{0b7e8f3a-3c0e-4b8e-9a43-1f2d3c4b5a69}:fail", uuid.Nil, false},
		{"p:breaker:{not-a-uuid}:open", uuid.Nil, false},
	} {
		got, ok := breakerkeys.ParseOpen("p:", tt.key)
		if got != tt.id || ok != tt.ok {
			t.Errorf("ParseOpen(%q) = %s, %v; want %s, %v", tt.key, got, ok, tt.id, tt.ok)
		}
	}
}
