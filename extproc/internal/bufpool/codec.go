package bufpool

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// Codec is gRPC's proto codec with its buffers taken from a Pool. Install
// it with grpc.ForceServerCodecV2.
//
// The server option experimental.BufferPool covers only the transport's
// frame buffers: gRPC's proto codec (google.golang.org/grpc/encoding/proto)
// assembles each received message of several frames, and marshals each
// reply over 1 KiB, with buffers from mem.DefaultBufferPool(), the
// process-wide pool that zeroes 1 MiB for every 32 KiB–1 MiB message. A
// codec of the server's own changes that for this server only, where
// experimental.SetDefaultBufferPool would change it for every gRPC client
// and server in the process.
type Codec struct {
	pool mem.BufferPool
}

// NewCodec returns a codec whose buffers come from pool.
func NewCodec(pool mem.BufferPool) *Codec { return &Codec{pool: pool} }

var _ encoding.CodecV2 = (*Codec)(nil)

// Name is "proto": the codec replaces the default one for the content
// subtype every gRPC client sends.
func (*Codec) Name() string { return "proto" }

// Marshal encodes v, a protobuf message, into one buffer.
func (c *Codec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("bufpool: cannot marshal %T, not a proto.Message", v)
	}
	size := proto.Size(m)
	// UseCachedSize is safe right after proto.Size of an unchanged message
	// (the same reasoning as gRPC's own codec).
	opts := proto.MarshalOptions{UseCachedSize: true}
	if mem.IsBelowBufferPoolingThreshold(size) {
		b, err := opts.Marshal(m)
		if err != nil {
			return nil, fmt.Errorf("bufpool: %w", err)
		}
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	buf := c.pool.Get(size)
	if _, err := opts.MarshalAppend((*buf)[:0], m); err != nil {
		c.pool.Put(buf)
		return nil, fmt.Errorf("bufpool: %w", err)
	}
	return mem.BufferSlice{mem.NewBuffer(buf, c.pool)}, nil
}

// Unmarshal decodes data into v, a protobuf message. proto.Unmarshal copies
// what it keeps, so the assembled buffer goes back to the pool at once.
func (c *Codec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("bufpool: cannot unmarshal into %T, not a proto.Message", v)
	}
	buf := data.MaterializeToBuffer(c.pool)
	defer buf.Free()
	if err := proto.Unmarshal(buf.ReadOnlyData(), m); err != nil {
		return fmt.Errorf("bufpool: %w", err)
	}
	return nil
}
