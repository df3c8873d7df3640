package bufpool

import (
	"bytes"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// TestCodecMatchesGRPCProtoCodec: the codec's bytes are gRPC's own proto
// codec's (the oracle), for messages under and over the pooling threshold,
// and it decodes what arrives in one buffer or in several.
func TestCodecMatchesGRPCProtoCodec(t *testing.T) {
	c := NewCodec(New(8, 26))
	oracle := encoding.GetCodecV2(grpcproto.Name)
	if c.Name() != oracle.Name() {
		t.Fatalf("Name = %q, want %q", c.Name(), oracle.Name())
	}
	for _, n := range []int{0, 10, 1023, 1024, 48_000, 1 << 20} {
		msg := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{
			RequestBody: &extprocv3.HttpBody{Body: bytes.Repeat([]byte{'x'}, n), EndOfStream: true}}}
		got, err := c.Marshal(msg)
		if err != nil {
			t.Fatal(err)
		}
		want, err := oracle.Marshal(msg)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Materialize(), want.Materialize()) {
			t.Fatalf("%d-byte body: Marshal differs from gRPC's proto codec", n)
		}
		wire := want.Materialize()
		for _, cut := range []int{len(wire), 1, 7, 16_384} {
			var slice mem.BufferSlice
			for rest := wire; len(rest) > 0; rest = rest[min(cut, len(rest)):] {
				slice = append(slice, mem.SliceBuffer(rest[:min(cut, len(rest))]))
			}
			var back extprocv3.ProcessingRequest
			if err := c.Unmarshal(slice, &back); err != nil {
				t.Fatalf("%d-byte body in %d-byte buffers: %v", n, cut, err)
			}
			if !proto.Equal(&back, msg) {
				t.Fatalf("%d-byte body in %d-byte buffers: decoded message differs", n, cut)
			}
		}
		got.Free()
		want.Free()
	}
}

func TestCodecRefusesOtherTypes(t *testing.T) {
	c := NewCodec(New(8, 26))
	if _, err := c.Marshal("not a message"); err == nil {
		t.Error("Marshal of a string: no error")
	}
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer([]byte{1})}, new(int)); err == nil {
		t.Error("Unmarshal into *int: no error")
	}
	var m extprocv3.ProcessingRequest
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer([]byte{0xff, 0xff})}, &m); err == nil {
		t.Error("Unmarshal of invalid bytes: no error")
	}
}
