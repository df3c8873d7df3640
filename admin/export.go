package admin

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/ccproxy/ccproxy/admin/usageexport"
	"github.com/ccproxy/ccproxy/internal/store"
)

// exportWriteWindow is how long an export may go without progress before
// the connection is cut: each flush moves the write deadline this far.
const exportWriteWindow = 2 * time.Minute

// csvStream writes an export: the header with the first row (so that an
// error before any row is still a problem response), the rows as they
// come, flushing as it goes and moving the write deadline with each flush.
type csvStream struct {
	s       *Server
	w       http.ResponseWriter
	r       *http.Request
	rc      *http.ResponseController
	cw      *usageexport.Writer
	header  []string
	started bool
	name    string
}

func (s *Server) newCSVStream(w http.ResponseWriter, r *http.Request, header []string, name string) *csvStream {
	cs := &csvStream{s: s, w: w, r: r, rc: http.NewResponseController(w), header: header, name: name}
	cs.cw = usageexport.NewWriter(w, func() error {
		_ = cs.rc.SetWriteDeadline(time.Now().Add(exportWriteWindow))
		return cs.rc.Flush()
	})
	return cs
}

func (cs *csvStream) start() error {
	if cs.started {
		return nil
	}
	cs.started = true
	h := cs.w.Header()
	h.Set("Content-Type", "text/csv; charset=utf-8")
	h.Set("Content-Disposition", `attachment; filename="`+cs.name+`"`)
	cs.w.WriteHeader(http.StatusOK)
	return cs.cw.Write(cs.header)
}

func (cs *csvStream) row(rec []string) error {
	if err := cs.start(); err != nil {
		return err
	}
	return cs.cw.Write(rec)
}

// finish ends the export. After an error once rows went out, the status is
// sent already: the connection is aborted so that the client sees a
// truncated answer, never a short CSV that looks complete.
func (cs *csvStream) finish(err error) {
	if err == nil {
		if err = cs.start(); err == nil {
			err = cs.cw.Flush()
		}
	}
	if err == nil {
		return
	}
	if !cs.started {
		cs.s.storeError(cs.w, cs.r, err)
		return
	}
	cs.s.log.LogAttrs(cs.r.Context(), slog.LevelError, "usage export aborted after it started", slog.String("error", err.Error()))
	panic(http.ErrAbortHandler)
}

// exportRange reads the filters of an export: from and to are required
// (and from before to).
func (s *Server) exportRange(r *http.Request, errs *[]fieldError) (user, key *uuid.UUID, from, to time.Time) {
	user, key, from, to = s.usageFilters(r, errs, false)
	if from.IsZero() {
		*errs = append(*errs, fieldError{Field: "from", Message: "required: an RFC 3339 time"})
	}
	if to.IsZero() {
		*errs = append(*errs, fieldError{Field: "to", Message: "required: an RFC 3339 time"})
	}
	return user, key, from, to
}

func (s *Server) handleExportRequests(w http.ResponseWriter, r *http.Request) {
	var errs []fieldError
	user, key, from, to := s.exportRange(r, &errs)
	f := store.UsageFilter{UserID: user, AccessKeyID: key, From: from, To: to,
		Provider: store.Provider(r.URL.Query().Get("provider"))}
	if f.Provider != "" && !f.Provider.Valid() {
		errs = append(errs, fieldError{Field: "provider", Message: "must be anthropic or bedrock"})
	}
	if len(errs) > 0 {
		s.invalid(w, r, errs)
		return
	}
	cs := s.newCSVStream(w, r, usageexport.RequestColumns, "ccproxy-usage-requests.csv")
	cs.finish(s.st.Usage().EachRequest(r.Context(), f, func(e store.ExportEvent) error {
		return cs.row(usageexport.RequestRecord(e, s.loc))
	}))
}

func (s *Server) handleExportDaily(w http.ResponseWriter, r *http.Request) {
	var errs []fieldError
	user, key, from, to := s.exportRange(r, &errs)
	loc := tzParam(r, &errs)
	if loc == nil {
		loc = s.loc
	}
	if len(errs) > 0 {
		s.invalid(w, r, errs)
		return
	}
	cs := s.newCSVStream(w, r, usageexport.DailyColumns, "ccproxy-usage-daily.csv")
	cs.finish(s.st.Usage().EachDaily(r.Context(), store.DailyExportQuery{UserID: user, AccessKeyID: key, From: from, To: to, Location: loc},
		func(d store.DailyUsage) error { return cs.row(usageexport.DailyRecord(d, loc)) }))
}
