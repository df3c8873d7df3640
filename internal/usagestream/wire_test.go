package usagestream

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ccproxy/ccproxy/internal/usage"
)

func fullEvent() usage.Event {
	return usage.Event{
		RequestID:     "6f0c1c7e-4d8a-4b7e-9a43-1f2d3c4b5a69",
		Time:          time.Date(2026, 3, 14, 15, 9, 26, 535897932, time.UTC),
		UserID:        uuid.MustParse("0b7e8f3a-3c0e-4b8e-9a43-1f2d3c4b5a69"),
		KeyID:         uuid.MustParse("1c8f9a4b-4d1f-4c9f-8b54-2a3e4d5c6b7a"),
		TeamID:        uuid.MustParse("5e4d3c2b-1a0f-4e9d-8c7b-6a5f4e3d2c1b"),
		SessionID:     "2f9f7a0c-session",
		AgentID:       "agent-7",
		ParentAgentID: "agent-1",
		AgentSpawns:   2,
		ClientVersion: "2.1.332",
		PathKind:      usage.PathMessages,
		Model:         "claude-sonnet-4-5",
		BackendModel:  "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
		Provider:      usage.ProviderBedrock,
		Region:        "us-east-1",
		Route:         "bedrock",
		Fallback:      true, FallbackReason: "plan_429",
		BudgetAction: usage.BudgetDowngrade, OriginalModel: "claude-opus-5-5",
		Stream: true,
		Status: 200,
		Usage: usage.Usage{
			InputTokens: 1234, OutputTokens: 567, CacheReadInputTokens: 89012,
			CacheWrite5mInputTokens: 3456, CacheWrite1hInputTokens: 78,
		},
		CountedInputTokens: 42,
		TTFT:               812345678 * time.Nanosecond,
		Latency:            12*time.Second + 345678901,
		Aborted:            true,
		PlanLimits: usage.PlanLimits{
			Status: usage.PlanStatusAllowedWarning, Claim: "five_hour",
			Utilization5h: 0.91, Utilization7d: 0.375, Has5h: true, Has7d: true,
			Reset5h: time.Date(2026, 3, 14, 18, 0, 0, 0, time.UTC),
			Reset7d: time.Date(2026, 3, 18, 9, 0, 0, 0, time.UTC),
			Reset:   time.Date(2026, 3, 14, 18, 0, 0, 0, time.UTC),
		},
		RejectedCredentialID: uuid.MustParse("7a6b5c4d-3e2f-4a1b-8c9d-0e1f2a3b4c5d"),
	}
}

func TestRoundTripIsExact(t *testing.T) {
	full := fullEvent()
	minimal := usage.Event{
		RequestID: "r", Time: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		PathKind: usage.PathCountTokens, Provider: usage.ProviderAnthropic,
	}
	// Every field of usage.Event must be set in full, so that a new field
	// without wire support fails this test.
	checkAllSet(t, reflect.ValueOf(full), "Event")
	for name, ev := range map[string]usage.Event{"full": full, "minimal": minimal} {
		t.Run(name, func(t *testing.T) {
			got, err := Decode(Encode(ev))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, ev) {
				t.Fatalf("round trip\n got %+v\nwant %+v", got, ev)
			}
		})
	}
}

func checkAllSet(t *testing.T, v reflect.Value, path string) {
	t.Helper()
	if v.Kind() == reflect.Struct && v.Type() != reflect.TypeOf(time.Time{}) {
		for i := range v.NumField() {
			checkAllSet(t, v.Field(i), path+"."+v.Type().Field(i).Name)
		}
		return
	}
	if v.IsZero() {
		t.Errorf("%s is zero in fullEvent: set it (and carry it in the wire format)", path)
	}
}

func TestEncodeNormalisesTime(t *testing.T) {
	ev := fullEvent()
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	ev.Time = time.Now().In(paris) // with a monotonic reading and a location
	got, err := Decode(Encode(ev))
	if err != nil {
		t.Fatal(err)
	}
	if !got.Time.Equal(ev.Time) || got.Time.Location() != time.UTC {
		t.Fatalf("time %v, want %v in UTC", got.Time, ev.Time)
	}
}

func TestWireFormat(t *testing.T) {
	got := string(Encode(fullEvent()))
	want := `{"v":1,"request_id":"6f0c1c7e-4d8a-4b7e-9a43-1f2d3c4b5a69","time":"2026-03-14T15:09:26.535897932Z",` +
		`"user_id":"0b7e8f3a-3c0e-4b8e-9a43-1f2d3c4b5a69","key_id":"1c8f9a4b-4d1f-4c9f-8b54-2a3e4d5c6b7a",` +
		`"session_id":"2f9f7a0c-session","agent_id":"agent-7","parent_agent_id":"agent-1","agent_spawns":2,"client_version":"2.1.332","path":"messages",` +
		`"model":"claude-sonnet-4-5","backend_model":"us.anthropic.claude-sonnet-4-5-20250929-v1:0","provider":"bedrock",` +
		`"region":"us-east-1","route":"bedrock","fallback":true,"fallback_reason":"plan_429","budget_action":"downgrade","original_model":"claude-opus-5-5","stream":true,"status":200,` +
		`"input_tokens":1234,"output_tokens":567,"cache_read_tokens":89012,"cache_write_5m_tokens":3456,` +
		`"cache_write_1h_tokens":78,"counted_input_tokens":42,"ttft_ns":812345678,"latency_ns":12345678901,"aborted":true,` +
		`"plan_limits":{"status":"allowed_warning","claim":"five_hour","u5h":0.91,"u7d":0.375,"reset5h":1773511200000,` +
		`"reset7d":1773824400000,"reset":1773511200000},` +
		// An optional field added within version 1: older decoders ignore it.
		`"rejected_credential":"7a6b5c4d-3e2f-4a1b-8c9d-0e1f2a3b4c5d","team_id":"5e4d3c2b-1a0f-4e9d-8c7b-6a5f4e3d2c1b"}`
	if got != want {
		t.Fatalf("wire format changed (a change needs a new version):\n got %s\nwant %s", got, want)
	}
}

func TestDecodeRejects(t *testing.T) {
	valid := string(Encode(fullEvent()))
	edit := func(from, to string) string {
		if !strings.Contains(valid, from) {
			t.Fatalf("%q not in %s", from, valid)
		}
		return strings.Replace(valid, from, to, 1)
	}
	tests := map[string]string{
		"empty":                "",
		"not json":             "hello",
		"array":                "[]",
		"null":                 "null",
		"trailing data":        valid + "{}",
		"version 2":            edit(`"v":1`, `"v":2`),
		"no version":           edit(`"v":1,`, ``),
		"negative spawns":      edit(`"agent_spawns":2`, `"agent_spawns":-1`),
		"too many spawns":      edit(`"agent_spawns":2`, `"agent_spawns":32768`),
		"no request id":        edit(`"request_id":"6f0c1c7e-4d8a-4b7e-9a43-1f2d3c4b5a69"`, `"request_id":""`),
		"long request id":      edit(`"request_id":"6f0c1c7e-4d8a-4b7e-9a43-1f2d3c4b5a69"`, `"request_id":"`+strings.Repeat("x", 201)+`"`),
		"bad time":             edit(`"time":"2026-03-14T15:09:26.535897932Z"`, `"time":"yesterday"`),
		"no time":              edit(`"time":"2026-03-14T15:09:26.535897932Z",`, ``),
		"ancient time":         edit(`"time":"2026-03-14T15:09:26.535897932Z"`, `"time":"1999-12-31T23:59:59Z"`),
		"future time":          edit(`"time":"2026-03-14T15:09:26.535897932Z"`, `"time":"3000-01-01T00:00:00Z"`),
		"bad user id":          edit(`"user_id":"0b7e8f3a-3c0e-4b8e-9a43-1f2d3c4b5a69"`, `"user_id":"nope"`),
		"bad path":             edit(`"path":"messages"`, `"path":"complete"`),
		"bad provider":         edit(`"provider":"bedrock"`, `"provider":"vertex"`),
		"status 1000":          edit(`"status":200`, `"status":1000`),
		"negative status":      edit(`"status":200`, `"status":-1`),
		"negative tokens":      edit(`"output_tokens":567`, `"output_tokens":-567`),
		"negative counted":     edit(`"counted_input_tokens":42`, `"counted_input_tokens":-1`),
		"fractional tokens":    edit(`"output_tokens":567`, `"output_tokens":5.5`),
		"string tokens":        edit(`"output_tokens":567`, `"output_tokens":"567"`),
		"negative latency":     edit(`"latency_ns":12345678901`, `"latency_ns":-1`),
		"huge ttft":            edit(`"ttft_ns":812345678`, `"ttft_ns":9223372036854775807`),
		"overflowing integer":  edit(`"input_tokens":1234`, `"input_tokens":92233720368547758070`),
		"too large":            edit(`"model":"claude-sonnet-4-5"`, `"model":"`+strings.Repeat("m", MaxEntrySize)+`"`),
		"utilization 101":      edit(`"u5h":0.91`, `"u5h":101`),
		"negative utilization": edit(`"u7d":0.375`, `"u7d":-0.1`),
		"reset in year 3000":   edit(`"reset":1773511200000`, `"reset":32503680000000`),
		"long claim":           edit(`"claim":"five_hour"`, `"claim":"`+strings.Repeat("c", 65)+`"`),
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			ev, err := Decode([]byte(in))
			if err == nil {
				t.Fatalf("Decode accepted %.200s as %+v", in, ev)
			}
			if !errors.Is(err, ErrUndecodable) {
				t.Fatalf("error %v does not wrap ErrUndecodable", err)
			}
		})
	}
}

func TestDecodeIgnoresUnknownFields(t *testing.T) {
	in := strings.Replace(string(Encode(fullEvent())), `"v":1,`, `"v":1,"added_later":{"x":[1,2]},`, 1)
	got, err := Decode([]byte(in))
	if err != nil || !reflect.DeepEqual(got, fullEvent()) {
		t.Fatalf("Decode = %+v, %v", got, err)
	}
}

// FuzzDecode feeds untrusted bytes to the decoder: it must not panic, and
// what it accepts must re-encode to an equal event that passes the checks.
func FuzzDecode(f *testing.F) {
	f.Add(Encode(fullEvent()))
	f.Add(Encode(usage.Event{RequestID: "r", Time: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), PathKind: "count_tokens", Provider: "anthropic"}))
	f.Add([]byte(`{"v":1,"request_id":"\u0000","time":"2026-01-01T00:00:00+14:00","path":"messages","provider":"anthropic","status":0,"model":"\ud800"}`))
	f.Add([]byte(`{"v":1}`))
	f.Add([]byte(`{"v":1,"v":2}`))
	f.Add([]byte(`{"v":1.0,"request_id":"x","time":"2026-01-01T00:00:00Z","path":"messages","provider":"bedrock","status":999,"ttft_ns":2147483647000000}`))
	f.Add([]byte("\xff\xfe"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrUndecodable) {
				t.Fatalf("error %v does not wrap ErrUndecodable", err)
			}
			return
		}
		if err := check(ev); err != nil {
			t.Fatalf("accepted an event that fails the checks: %v", err)
		}
		again, err := Decode(Encode(ev))
		if err != nil {
			t.Fatalf("re-encoding an accepted event: %v", err)
		}
		if !reflect.DeepEqual(again, ev) {
			t.Fatalf("round trip of an accepted event\n got %+v\nwant %+v", again, ev)
		}
	})
}
