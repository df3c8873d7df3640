// Package usageexport owns the CSV exports of usage: the column sets (a
// FinOps FOCUS-compatible set plus ccproxy's own x_ columns; the mapping is
// documented in docs/exports.md), the conversion of stored usage to rows,
// and a CSV writer that is safe to open in a spreadsheet: every cell that
// starts with a character a spreadsheet reads as a formula (= + - @, tab,
// carriage return) is neutralised with a leading apostrophe, and the
// writer flushes as it goes so an export of any size streams.
package usageexport

import (
	"encoding/csv"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/shopspring/decimal"

	"github.com/ccproxy/ccproxy/internal/store"
)

// Neutralize returns cell as a spreadsheet shows it as text: a cell that
// starts with =, +, -, @, a tab or a carriage return gets a leading
// apostrophe (OWASP's advice against CSV injection); others are returned
// unchanged. ccproxy's own numbers are never negative, so none is changed.
func Neutralize(cell string) string {
	if cell == "" {
		return cell
	}
	switch cell[0] {
	case '=', '+', '-', '@', '\t', '\r':
		return "'" + cell
	}
	return cell
}

// Writer writes neutralised CSV records (RFC 4180 quoting, CRLF line ends)
// and flushes every FlushEvery records through flush.
type Writer struct {
	cw    *csv.Writer
	flush func() error
	n     int
	cells []string
}

// FlushEvery is how many records a Writer buffers before flushing.
const FlushEvery = 500

// NewWriter returns a Writer on w. flush, when set, is called after each
// batch of records reached w (an http.ResponseController's Flush).
func NewWriter(w io.Writer, flush func() error) *Writer {
	cw := csv.NewWriter(w)
	cw.UseCRLF = true
	return &Writer{cw: cw, flush: flush}
}

// Write writes one record, each cell neutralised.
func (w *Writer) Write(record []string) error {
	w.cells = w.cells[:0]
	for _, c := range record {
		w.cells = append(w.cells, Neutralize(c))
	}
	if err := w.cw.Write(w.cells); err != nil {
		return err
	}
	w.n++
	if w.n%FlushEvery == 0 {
		return w.Flush()
	}
	return nil
}

// Flush writes the buffered records out and calls flush.
func (w *Writer) Flush() error {
	w.cw.Flush()
	if err := w.cw.Error(); err != nil {
		return err
	}
	if w.flush != nil {
		return w.flush()
	}
	return nil
}

// focusColumns are the FOCUS columns both exports fill, in order.
var focusColumns = []string{
	"BilledCost", "EffectiveCost", "ListCost", "ContractedCost", "BillingCurrency",
	"BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd",
	"ChargeCategory", "ChargeFrequency", "ChargeDescription",
	"ConsumedQuantity", "ConsumedUnit",
	"ProviderName", "PublisherName", "InvoiceIssuerName", "ServiceName", "ServiceCategory",
	"RegionId", "ResourceId", "ResourceType", "SkuId", "SubAccountId", "SubAccountName",
}

// RequestColumns is the header of the per-request export.
var RequestColumns = append(append([]string(nil), focusColumns...),
	"x_RequestId", "x_EventTime", "x_AccessKeyId", "x_Provider", "x_Model", "x_BedrockModelId", "x_Kind",
	"x_Status", "x_Fallback", "x_FallbackReason", "x_SessionId", "x_Requests",
	"x_InputTokens", "x_OutputTokens", "x_CacheReadTokens", "x_CacheWrite5mTokens", "x_CacheWrite1hTokens",
	"x_CostUSD", "x_PriceFlag", "x_LatencyMs", "x_Aborted")

// DailyColumns is the header of the day × user × model export.
var DailyColumns = append(append([]string(nil), focusColumns...),
	"x_Day", "x_Provider", "x_Model", "x_Requests",
	"x_InputTokens", "x_OutputTokens", "x_CacheReadTokens", "x_CacheWrite5mTokens", "x_CacheWrite1hTokens",
	"x_CostUSD", "x_Fallbacks", "x_Errors")

// focusTime is FOCUS's date-time form: ISO 8601 in UTC with a Z.
func focusTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05Z") }

func money(d decimal.Decimal) string { return d.StringFixed(6) }

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// provider holds what FOCUS says about who sells the usage of a provider.
type provider struct {
	service, providerName, issuer string
	// billed reports real spend (Bedrock); Plan usage is covered by the
	// developers' subscriptions, its cost a list-price equivalent.
	billed bool
}

func providerOf(p store.Provider) provider {
	if p == store.ProviderBedrock {
		return provider{service: "Amazon Bedrock", providerName: "AWS", issuer: "AWS", billed: true}
	}
	return provider{service: "Claude (Anthropic subscription)", providerName: "Anthropic", issuer: "Anthropic"}
}

// focus fills the FOCUS columns.
func focus(p store.Provider, cost decimal.Decimal, periodStart, periodEnd time.Time, loc *time.Location,
	description string, tokens int64, region, resourceID, resourceType, sku string, userID, userName string) []string {
	pv := providerOf(p)
	billed := decimal.Zero
	if pv.billed {
		billed = cost
	}
	if loc == nil {
		loc = time.UTC
	}
	ps := periodStart.In(loc)
	bStart := time.Date(ps.Year(), ps.Month(), 1, 0, 0, 0, 0, loc)
	bEnd := bStart.AddDate(0, 1, 0)
	return []string{
		money(billed), money(billed), money(cost), money(billed), "USD",
		focusTime(bStart), focusTime(bEnd), focusTime(periodStart), focusTime(periodEnd),
		"Usage", "Usage-Based", description,
		itoa(tokens), "Tokens",
		pv.providerName, "Anthropic", pv.issuer, pv.service, "AI and Machine Learning",
		region, resourceID, resourceType, sku, userID, userName,
	}
}

func b(v bool) string {
	if v {
		return "true"
	}
	return "false"
}

// RequestRecord is the per-request export's row of e; loc is the billing
// time zone (billing periods are its calendar months).
func RequestRecord(e store.ExportEvent, loc *time.Location) []string {
	tokens := e.InputTokens + e.OutputTokens + e.CacheReadTokens + e.CacheWrite5mTokens + e.CacheWrite1hTokens
	hour := e.EventTime.UTC().Truncate(time.Hour)
	desc := e.RequestedModel + " " + string(e.Kind) + " via " + string(e.Provider)
	if e.Fallback {
		desc += " (fallback)"
	}
	out := focus(e.Provider, e.CostUSD, hour, hour.Add(time.Hour), loc, strings.TrimSpace(desc), tokens, e.Region,
		e.AccessKeyID.String(), "Access key", e.RequestedModel, e.UserID.String(), e.UserName)
	return append(out,
		e.RequestID, e.EventTime.UTC().Format(time.RFC3339Nano), e.AccessKeyID.String(), string(e.Provider),
		e.RequestedModel, e.BedrockModelID, string(e.Kind), strconv.Itoa(e.Status), b(e.Fallback), e.FallbackReason,
		e.SessionID, "1", itoa(e.InputTokens), itoa(e.OutputTokens), itoa(e.CacheReadTokens),
		itoa(e.CacheWrite5mTokens), itoa(e.CacheWrite1hTokens), money(e.CostUSD), string(e.PriceFlag),
		strconv.Itoa(e.LatencyMs), b(e.Aborted))
}

// DailyRecord is the daily export's row of d; loc is the time zone of its
// days and of the billing periods.
func DailyRecord(d store.DailyUsage, loc *time.Location) []string {
	if loc == nil {
		loc = time.UTC
	}
	day := d.Day.In(loc)
	end := time.Date(day.Year(), day.Month(), day.Day()+1, 0, 0, 0, 0, loc)
	tokens := d.InputTokens + d.OutputTokens + d.CacheReadTokens + d.CacheWrite5mTokens + d.CacheWrite1hTokens
	out := focus(d.Provider, d.CostUSD, day, end, loc, d.Model+" via "+string(d.Provider), tokens, "",
		"", "", d.Model, d.UserID.String(), d.UserName)
	return append(out,
		day.Format(time.DateOnly), string(d.Provider), d.Model, itoa(d.Requests),
		itoa(d.InputTokens), itoa(d.OutputTokens), itoa(d.CacheReadTokens), itoa(d.CacheWrite5mTokens),
		itoa(d.CacheWrite1hTokens), money(d.CostUSD), itoa(d.Fallbacks), itoa(d.Errors))
}
