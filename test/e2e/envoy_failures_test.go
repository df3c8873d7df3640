package e2e

import (
	"slices"
	"testing"

	"github.com/ccproxy/ccproxy/test/e2e/internal/fakeanthropic"
)

// TestPlanHostDoesNotResolve: when Plan's STRICT_DNS name does not resolve,
// Envoy has no host at priority 0 and sends the first attempt of a
// plan_first request straight to Bedrock (attempt count 1). Claude Code
// gets Bedrock's answer, the usage rows say plan_no_host, and the breaker
// is not charged: more requests than the failure threshold all still go
// the same way, none as breaker_open.
func TestPlanHostDoesNotResolve(t *testing.T) {
	fg := startFallbackGateway(t, func(fg *fallbackGateway) {
		fg.env = append(fg.env, "CCPROXY_DEV_RESOLVE="+anthropicHost+":443=nxdomain,"+eastHost+":443="+fg.fb.Addr())
	})
	u := fg.admin.user("nohost", "plan_first", eastCredential())
	marker := fg.scenario(t, func(r fakeanthropic.Request) fakeanthropic.Reply {
		t.Errorf("Plan, whose name does not resolve, received %s", r.Path)
		return planText(r, "unreachable")
	}, bedrockText("Bedrock answered without Plan."))
	const turns = 4 // above the breaker's failure threshold (3)
	for i := 0; i < turns; i++ {
		res := fg.claude(u.Key).Prompt(t, "No Plan host "+marker)
		wantPrinted(t, res, "Bedrock answered without Plan.")
	}
	rows := waitFallbackRows(t, fg.gateway, u.ID, turns)
	want := slices.Repeat([]fallbackRow{bedrockRow("plan_no_host")}, turns)
	if !slices.Equal(rows, want) {
		t.Fatalf("usage rows %+v\nwant %+v", rows, want)
	}
	if v := metricValue(t, fg.gateway, `ccproxy_extproc_breaker_transitions_total{store="redis",to="open"}`); v != 0 {
		t.Fatalf("the breaker opened %v times for Envoy's missing Plan host", v)
	}
}
