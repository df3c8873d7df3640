// Package bufpool owns the gRPC buffers of the ext_proc server: a pool of
// buffers in power-of-two tiers, handed out without zeroing, and the proto
// codec that takes its buffers from that pool (Codec).
//
// gRPC's own tiered pool (mem.NewBinaryTieredBufferPool) clears the whole
// buffer on every Get. For the ~50 KB Claude Code bodies that cross the
// stream twice per Bedrock request (the request body in, the translated body
// out) that clearing was 6 % of the server's CPU in the extproc-bench
// Bedrock scenario. gRPC only ever uses a pooled buffer after writing it in
// full — io.ReadFull of a frame, proto.MarshalAppend of a message of
// exactly that size — and gRPC keeps an unexported "dirty" pool for
// exactly that reason (internal/mem.NewDirtyBinaryTieredBufferPool).
package bufpool

import (
	"math/bits"
	"sync"
)

// Pool implements google.golang.org/grpc/mem.BufferPool.
type Pool struct {
	minShift, maxShift uint8
	tiers              []sync.Pool
}

// New returns a pool with tiers of 2^minShift … 2^maxShift bytes; larger
// requests are allocated and never pooled.
func New(minShift, maxShift uint8) *Pool {
	p := &Pool{minShift: minShift, maxShift: maxShift, tiers: make([]sync.Pool, maxShift-minShift+1)}
	for i := range p.tiers {
		size := 1 << (int(minShift) + i)
		p.tiers[i].New = func() any {
			b := make([]byte, size)
			return &b
		}
	}
	return p
}

// tier returns the index of the smallest tier holding n bytes, or -1.
func (p *Pool) tier(n int) int {
	shift := uint8(0)
	if n > 1 {
		shift = uint8(bits.Len(uint(n - 1)))
	}
	shift = max(shift, p.minShift)
	if shift > p.maxShift {
		return -1
	}
	return int(shift - p.minShift)
}

// Get returns a buffer of length n; its contents are unspecified.
func (p *Pool) Get(n int) *[]byte {
	i := p.tier(n)
	if i < 0 {
		b := make([]byte, n)
		return &b
	}
	b := p.tiers[i].Get().(*[]byte)
	*b = (*b)[:n]
	return b
}

// Put returns a buffer obtained from Get.
func (p *Pool) Put(b *[]byte) {
	c := cap(*b)
	if c == 0 || c&(c-1) != 0 {
		return // not one of ours (or a non-tier size): let the GC have it
	}
	i := p.tier(c)
	if i < 0 || 1<<(int(p.minShift)+i) != c {
		return
	}
	*b = (*b)[:c]
	p.tiers[i].Put(b)
}
