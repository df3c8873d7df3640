package admin

import (
	"context"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"

	"github.com/ccproxy/ccproxy/internal/store"
)

// Every list endpoint answers the same way: limit and cursor plus the
// endpoint's own filters in the query, every invalid parameter in one 422
// problem, and one page of items in the page envelope. serveList does that
// once; an endpoint supplies only its filter, its store call and its item
// conversion.

// listFilter reads a list endpoint's own query parameters, adding what is
// invalid to errs.
type listFilter[F any] func(r *http.Request, errs *[]fieldError) F

// listFetch returns one page of rows matching f and the cursor of the next
// page ("" after the last). It has the shape of the store's paged queries,
// so they can be passed as they are.
type listFetch[F, T any] func(ctx context.Context, f F, limit int, cursor string) (rows []T, next string, err error)

// serveList answers a list request: it validates the paging and filter
// parameters, fetches the page and writes its rows, each converted by item,
// in the page envelope. An error from fetch is answered by storeError.
func serveList[F, T, J any](s *Server, w http.ResponseWriter, r *http.Request,
	filter listFilter[F], fetch listFetch[F, T], item func(T) J) {
	var errs []fieldError
	limit, cursor := pageParams(r, &errs)
	f := filter(r, &errs)
	if len(errs) > 0 {
		s.invalid(w, r, errs)
		return
	}
	rows, next, err := fetch(r.Context(), f, limit, cursor)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	// make, not a nil slice: an empty page is "items": [], never null.
	pg := page[J]{Items: make([]J, len(rows))}
	for i, row := range rows {
		pg.Items[i] = item(row)
	}
	if next != "" {
		pg.NextCursor = &next
	}
	writeJSON(w, http.StatusOK, pg)
}

// noFilter is the filter of a list endpoint without parameters of its own.
func noFilter(*http.Request, *[]fieldError) struct{} { return struct{}{} }

// wholeList makes a listFetch of a store query that returns the whole list,
// paging it with slicePage. A cursor slicePage did not make is a validation
// error of the cursor parameter.
func wholeList[F, T any](all func(ctx context.Context, f F) ([]T, error)) listFetch[F, T] {
	return func(ctx context.Context, f F, limit int, cursor string) ([]T, string, error) {
		rows, err := all(ctx, f)
		if err != nil {
			return nil, "", err
		}
		pg, next, ok := slicePage(rows, limit, cursor)
		if !ok {
			return nil, "", &invalidError{errs: []fieldError{{Field: "cursor", Message: "malformed cursor"}}}
		}
		return pg, next, nil
	}
}

// page is the envelope of every list response.
type page[T any] struct {
	Items      []T     `json:"items"`
	NextCursor *string `json:"next_cursor"`
}

// pageParams reads limit and cursor.
func pageParams(r *http.Request, errs *[]fieldError) (limit int, cursor string) {
	q := r.URL.Query()
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > store.MaxPageSize {
			*errs = append(*errs, fieldError{Field: "limit", Message: "must be an integer from 1 to " + strconv.Itoa(store.MaxPageSize)})
		}
		limit = n
	}
	cursor = q.Get("cursor")
	if len(cursor) > 200 {
		*errs = append(*errs, fieldError{Field: "cursor", Message: "malformed cursor"})
	}
	return limit, cursor
}

// slicePage pages through a list the store returns whole; its cursor is the
// base64url offset of the next item.
func slicePage[T any](items []T, limit int, cursor string) ([]T, string, bool) {
	if limit <= 0 {
		limit = store.DefaultPageSize
	}
	off := 0
	if cursor != "" {
		raw, err := base64.RawURLEncoding.DecodeString(cursor)
		if err != nil {
			return nil, "", false
		}
		n, err := strconv.Atoi(strings.TrimPrefix(string(raw), "o:"))
		if err != nil || n < 0 || !strings.HasPrefix(string(raw), "o:") {
			return nil, "", false
		}
		off = min(n, len(items))
	}
	end := off + min(limit, len(items)-off) // off+limit may overflow
	next := ""
	if end < len(items) {
		next = base64.RawURLEncoding.EncodeToString([]byte("o:" + strconv.Itoa(end)))
	}
	return items[off:end], next, true
}
