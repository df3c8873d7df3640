package envoysim

import (
	"context"
	"errors"
	"io"
	"strconv"
	"sync"
)

// bodySource yields a body chunk by chunk; eos marks the last chunk (which
// may be empty), like Envoy's decodeData/encodeData(data, end_stream).
type bodySource interface {
	next(ctx context.Context) (data []byte, eos bool, err error)
}

var (
	errBufferLimit = errors.New("buffer limit exceeded")
	errAborted     = errors.New("stream aborted")
)

const chunkSize = 64 << 10

// readerBody reads an io.Reader. With a known length the chunk that
// completes it carries eos, as Envoy's codecs deliver it.
type readerBody struct {
	r       io.Reader
	length  int64 // -1 unknown
	read    int64
	done    bool
	onChunk func(n int)
	onEOS   func()
}

func (b *readerBody) next(ctx context.Context) ([]byte, bool, error) {
	if b.done {
		return nil, true, nil
	}
	if b.length >= 0 && b.read >= b.length {
		b.finish()
		return nil, true, nil
	}
	buf := make([]byte, chunkSize)
	n, err := b.r.Read(buf)
	b.read += int64(n)
	if n > 0 && b.onChunk != nil {
		b.onChunk(n)
	}
	switch {
	case err == io.EOF:
		b.finish()
		return buf[:n], true, nil
	case err != nil:
		return nil, false, err
	}
	if b.length >= 0 && b.read >= b.length {
		b.finish()
		return buf[:n], true, nil
	}
	return buf[:n], false, nil
}

func (b *readerBody) finish() {
	if !b.done {
		b.done = true
		if b.onEOS != nil {
			b.onEOS()
		}
	}
}

// bytesBody is a fully buffered body delivered as one chunk.
type bytesBody struct {
	data []byte
	sent bool
}

func (b *bytesBody) next(context.Context) ([]byte, bool, error) {
	if b.sent {
		return nil, true, nil
	}
	b.sent = true
	return b.data, true, nil
}

// replacedBody delivers a CONTINUE_AND_REPLACE body and drains the original
// (Filter::onData drains chunks once bodyReplaced()).
type replacedBody struct {
	inner  bodySource
	data   []byte
	noBody bool
	sent   bool
}

func (b *replacedBody) next(ctx context.Context) ([]byte, bool, error) {
	if !b.sent {
		b.sent = true
		if b.noBody {
			return b.data, true, nil
		}
		return b.data, false, nil
	}
	if b.noBody {
		return nil, true, nil
	}
	for {
		_, eos, err := b.inner.next(ctx)
		if err != nil || eos {
			return nil, eos, err
		}
	}
}

func readAll(ctx context.Context, b bodySource, limit int64) ([]byte, error) {
	var out []byte
	for {
		data, eos, err := b.next(ctx)
		if err != nil {
			return nil, err
		}
		out = append(out, data...)
		if int64(len(out)) > limit {
			return nil, errBufferLimit
		}
		if eos {
			return out, nil
		}
	}
}

func parseUint(s string) (uint64, error) { return strconv.ParseUint(s, 10, 64) }

// retryBuffer keeps the request body for replays on retry (the router's
// retry/shadow buffer). When the body outgrows the limit, retries are off for
// the request but the first attempt still streams it.
type retryBuffer struct {
	mu         sync.Mutex
	cond       chan struct{}
	chunks     [][]byte
	eos        bool
	err        error
	size       int64
	limit      int64
	overflow   bool
	onOverflow func()
}

// newRetryBuffer returns a buffer that calls onOverflow once, when the body
// first exceeds limit.
func newRetryBuffer(limit int64, onOverflow func()) *retryBuffer {
	return &retryBuffer{cond: make(chan struct{}), limit: limit, onOverflow: onOverflow}
}

func (rb *retryBuffer) push(data []byte, eos bool, err error) {
	rb.mu.Lock()
	overflowed := false
	if len(data) > 0 {
		rb.chunks = append(rb.chunks, data)
		rb.size += int64(len(data))
		if rb.size > rb.limit && !rb.overflow {
			rb.overflow = true
			overflowed = true
		}
	}
	rb.eos = rb.eos || eos
	if err != nil {
		rb.err = err
	}
	close(rb.cond)
	rb.cond = make(chan struct{})
	rb.mu.Unlock()
	if overflowed && rb.onOverflow != nil {
		rb.onOverflow()
	}
}

// waitComplete waits until the whole downstream request is buffered; false
// when ctx ends first.
func (rb *retryBuffer) waitComplete(ctx context.Context) bool {
	for {
		rb.mu.Lock()
		eos, wait := rb.eos, rb.cond
		rb.mu.Unlock()
		if eos {
			return true
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return false
		}
	}
}

func (rb *retryBuffer) canRetry() bool {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	return !rb.overflow
}

// reader returns an io.ReadCloser replaying the buffer from the start and
// following new data as it arrives.
func (rb *retryBuffer) reader(ctx context.Context, onComplete func()) io.ReadCloser {
	return &retryReader{rb: rb, ctx: ctx, onComplete: onComplete}
}

type retryReader struct {
	rb         *retryBuffer
	ctx        context.Context
	idx, off   int
	onComplete func()
	completed  bool
}

func (r *retryReader) Read(p []byte) (int, error) {
	for {
		r.rb.mu.Lock()
		if r.idx < len(r.rb.chunks) {
			c := r.rb.chunks[r.idx]
			n := copy(p, c[r.off:])
			r.off += n
			if r.off == len(c) {
				r.idx++
				r.off = 0
			}
			r.rb.mu.Unlock()
			return n, nil
		}
		if r.rb.err != nil {
			err := r.rb.err
			r.rb.mu.Unlock()
			return 0, err
		}
		if r.rb.eos {
			r.rb.mu.Unlock()
			if !r.completed {
				r.completed = true
				if r.onComplete != nil {
					r.onComplete()
				}
			}
			return 0, io.EOF
		}
		wait := r.rb.cond
		r.rb.mu.Unlock()
		select {
		case <-wait:
		case <-r.ctx.Done():
			return 0, r.ctx.Err()
		}
	}
}

func (r *retryReader) Close() error { return nil }
