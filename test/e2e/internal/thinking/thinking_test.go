package thinking

import (
	"errors"
	"strings"
	"testing"
)

func TestSignVerify(t *testing.T) {
	const text = "Let me think about 2+2. It is 4."
	sig := Sign(text)
	if sig != Sign(text) {
		t.Fatal("Sign is not deterministic")
	}
	if sig == Sign(text+" ") || sig == Sign("") {
		t.Fatal("different texts share a signature")
	}
	if !Verify(text, sig) {
		t.Error("Verify rejects Sign's signature")
	}
	if Verify(text+".", sig) || Verify(text, sig[:len(sig)-2]+"AA") || Verify(text, "") || Verify(text, "%%%") {
		t.Error("Verify accepts an altered text or signature")
	}
	if !Verify("", Sign("")) {
		t.Error("an empty thinking text does not verify")
	}
}

func TestCheckHistory(t *testing.T) {
	good := `{"type":"thinking","thinking":"hmm","signature":"` + Sign("hmm") + `"}`
	history := func(assistant string) string {
		return `{"model":"m","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":[` + assistant + `]},` +
			`{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":[{"type":"text","text":"out"}],"cache_control":{"type":"ephemeral"}}]}]}`
	}
	tests := []struct {
		name string
		body string
		want []string // BlockError strings, in order
	}{
		{name: "no thinking", body: history(`{"type":"text","text":"hi","cache_control":{"type":"ephemeral","ttl":"1h"}},{"type":"tool_use","id":"t1","name":"Bash","input":{}}`)},
		{name: "signed thinking then tool use", body: history(good + `,{"type":"tool_use","id":"t1","name":"Bash","input":{"command":"ls"}}`)},
		{name: "redacted thinking", body: history(`{"type":"redacted_thinking","data":"opaque"},` + good)},
		{name: "string content", body: `{"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"}]}`},
		{name: "thinking outside assistant messages is not checked", body: `{"messages":[{"role":"user","content":[{"type":"thinking","thinking":"x","signature":"bad"}]}]}`},
		{name: "not JSON", body: `nope`},
		{name: "altered text", body: history(`{"type":"thinking","thinking":"hmm!","signature":"` + Sign("hmm") + `"}`),
			want: []string{"messages.1.content.0: Invalid `signature` in `thinking` block"}},
		{name: "missing and empty signatures", body: history(`{"type":"text","text":"x"},{"type":"thinking","thinking":"a"},` + good + `,{"type":"thinking","thinking":"b","signature":""}`),
			want: []string{"messages.1.content.1: Invalid `signature` in `thinking` block", "messages.1.content.3: Invalid `signature` in `thinking` block"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckHistory([]byte(tt.body))
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("CheckHistory = %v; want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("CheckHistory = nil; want %q", tt.want)
			}
			if got := strings.Split(err.Error(), "\n"); strings.Join(got, "|") != strings.Join(tt.want, "|") {
				t.Errorf("CheckHistory = %q; want %q", got, tt.want)
			}
			var be *BlockError
			if !errors.As(err, &be) || be.Error() != tt.want[0] || be.Message != 1 {
				t.Errorf("errors.As: %+v", be)
			}
		})
	}
	err := CheckHistory([]byte(history(`{"type":"thinking","thinking":"a"},{"type":"thinking","thinking":"a","signature":"x"}`)))
	var be *BlockError
	if !errors.As(err, &be) || be.Reason != "missing signature" || be.Content != 0 {
		t.Errorf("first error %+v", be)
	}
}
