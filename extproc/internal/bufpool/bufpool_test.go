package bufpool

import (
	"testing"

	"google.golang.org/grpc/mem"
)

func TestGetPut(t *testing.T) {
	p := New(8, 16)
	tests := []struct {
		n       int
		wantCap int
	}{
		{0, 256}, {1, 256}, {256, 256}, {257, 512}, {48_000, 65536}, {65536, 65536}, {65537, 65537},
	}
	for _, tc := range tests {
		b := p.Get(tc.n)
		if len(*b) != tc.n || cap(*b) != tc.wantCap {
			t.Errorf("Get(%d): len %d cap %d; want len %d cap %d", tc.n, len(*b), cap(*b), tc.n, tc.wantCap)
		}
		p.Put(b)
	}
	// A reused buffer comes back with the requested length.
	b := p.Get(1000)
	(*b)[999] = 7
	p.Put(b)
	if b2 := p.Get(600); len(*b2) != 600 || cap(*b2) != 1024 {
		t.Fatalf("reuse: len %d cap %d", len(*b2), cap(*b2))
	}
	// Foreign buffers are dropped, not pooled into the wrong tier.
	odd := make([]byte, 300)
	p.Put(&odd)
	big := make([]byte, 1<<20)
	p.Put(&big)
}

func BenchmarkGetPut48K(b *testing.B) {
	p := New(8, 26)
	for b.Loop() {
		buf := p.Get(48_000)
		p.Put(buf)
	}
}

var _ mem.BufferPool = (*Pool)(nil)
