package fakebedrock

import (
	"encoding/json"
	"strings"
	"unicode/utf8"
)

// EchoPrefix starts every default answer.
const EchoPrefix = "fakebedrock heard: "

// EchoText is the text of the default answer to r: EchoPrefix followed by
// the last text block of the last user message (a string content counts as
// one text block), or, when that message holds no text but a tool_result,
// "tool result: <its text>". The quoted text is trimmed and cut to 200 runes.
func EchoText(r Request) string {
	var body struct {
		Messages []struct {
			Role    string          `json:"role"`
			Content json.RawMessage `json:"content"`
		} `json:"messages"`
	}
	_ = json.Unmarshal(r.InvokeBody(), &body)
	heard := ""
	for i := len(body.Messages) - 1; i >= 0; i-- {
		m := body.Messages[i]
		if m.Role != "user" {
			continue
		}
		text, result := lastText(m.Content)
		switch {
		case text != "":
			heard = text
		case result != "":
			heard = "tool result: " + result
		}
		break
	}
	heard = strings.TrimSpace(heard)
	if utf8.RuneCountInString(heard) > 200 {
		heard = string([]rune(heard)[:200])
	}
	return EchoPrefix + heard
}

type block struct {
	Type    string          `json:"type"`
	Text    string          `json:"text"`
	Content json.RawMessage `json:"content"`
}

// lastText returns the last text block's text and the last tool_result's
// text of a message content.
func lastText(content json.RawMessage) (text, result string) {
	var s string
	if json.Unmarshal(content, &s) == nil {
		return s, ""
	}
	var blocks []block
	_ = json.Unmarshal(content, &blocks)
	for _, b := range blocks {
		switch b.Type {
		case "text":
			text = b.Text
		case "tool_result":
			result, _ = lastText(b.Content)
		}
	}
	return text, result
}

// EstimateTokens is the fake's token count for an InvokeModel body: one
// token per 4 bytes, rounded up, at least 1.
func EstimateTokens(invokeBody []byte) int {
	return max(1, (len(invokeBody)+3)/4)
}

// EchoUsage is the usage of the default answer to r: Input =
// EstimateTokens(body), Output = the number of words of EchoText, no cache.
func EchoUsage(r Request) Usage {
	return Usage{Input: EstimateTokens(r.InvokeBody()), Output: len(strings.Fields(EchoText(r)))}
}

// Echo is the default answer to an invoke request: Answer with one text
// block EchoText(r) (in 3 deltas) and EchoUsage(r), as model
// AnthropicModel(r.ModelID).
func Echo(r Request) Reply {
	return Answer(AnthropicModel(r.ModelID), EchoUsage(r), Block{Text: EchoText(r), Chunks: 3})
}

// DefaultCountTokens is the default count-tokens answer:
// {"inputTokens": EstimateTokens(r.InvokeBody())}.
func DefaultCountTokens(r Request) Reply {
	return CountTokens(EstimateTokens(r.InvokeBody()))
}
