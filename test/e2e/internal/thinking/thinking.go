// Package thinking models the opaque signatures of extended-thinking blocks
// for the end-to-end fakes (fakeanthropic and fakebedrock).
//
// Anthropic and Bedrock answer with "thinking" content blocks carrying a
// "signature" and reject a later request whose history holds a thinking
// block with a missing or altered signature (400 invalid_request_error on
// the Claude API, ValidationException on Bedrock). Signatures are
// documented to be compatible across platforms: one made by the Claude API
// is accepted by Bedrock and the other way round. The fakes model that by
// signing with one fixed key shared by both: Sign makes the signature a
// fake attaches to a thinking block, and CheckHistory is the check a fake
// applies to every request's history.
package thinking

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
)

// key is the fixed signing key both fakes share (deterministic signatures).
var key = []byte("ccproxy e2e fake thinking signature key v1")

// Sign returns the signature of a thinking block with the given text: the
// standard base64 encoding of HMAC-SHA256 under a fixed key over the text.
// It is deterministic, so the same text always gets the same signature.
func Sign(thinkingText string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(thinkingText))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// Verify reports whether signature is Sign(thinkingText).
func Verify(thinkingText, signature string) bool {
	got, err := base64.StdEncoding.DecodeString(signature)
	if err != nil {
		return false
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(thinkingText))
	return hmac.Equal(got, m.Sum(nil))
}

// BlockError is one thinking block of a request's history whose signature
// does not verify.
type BlockError struct {
	// Message and Content are the indexes of the block: messages[Message].content[Content].
	Message, Content int
	// Reason says what is wrong: "missing signature" or "invalid signature".
	Reason string
}

// Error is the message the Claude API gives for the block, e.g.
// "messages.1.content.0: Invalid `signature` in `thinking` block".
func (e *BlockError) Error() string {
	return fmt.Sprintf("messages.%d.content.%d: Invalid `signature` in `thinking` block", e.Message, e.Content)
}

// CheckHistory checks the thinking blocks in the history of a Messages API
// request body (or a Bedrock InvokeModel body, which has the same
// "messages"): every {"type":"thinking"} block in the content array of an
// assistant message must carry a "signature" that Verify accepts for its
// "thinking" text. "redacted_thinking" blocks are accepted as they are, as
// are all other block types (text, tool_use, tool_result, images, …, with or
// without cache_control), string contents and the other roles' messages.
//
// It returns nil when every thinking block verifies, else the errors.Join of
// one *BlockError per failing block, in order (errors.As finds the first).
// A body that is not a JSON object with a messages array is not this
// check's business: it returns nil.
func CheckHistory(body []byte) error {
	var req struct {
		Messages []struct {
			Role    string          `json:"role"`
			Content json.RawMessage `json:"content"`
		} `json:"messages"`
	}
	if json.Unmarshal(body, &req) != nil {
		return nil
	}
	var errs []error
	for i, m := range req.Messages {
		c := bytes.TrimSpace(m.Content)
		if m.Role != "assistant" || len(c) == 0 || c[0] != '[' {
			continue
		}
		var blocks []json.RawMessage
		if json.Unmarshal(c, &blocks) != nil {
			continue
		}
		for j, raw := range blocks {
			var b struct {
				Type      string  `json:"type"`
				Thinking  string  `json:"thinking"`
				Signature *string `json:"signature"`
			}
			if json.Unmarshal(raw, &b) != nil || b.Type != "thinking" {
				continue
			}
			switch {
			case b.Signature == nil || *b.Signature == "":
				errs = append(errs, &BlockError{Message: i, Content: j, Reason: "missing signature"})
			case !Verify(b.Thinking, *b.Signature):
				errs = append(errs, &BlockError{Message: i, Content: j, Reason: "invalid signature"})
			}
		}
	}
	return errors.Join(errs...)
}
