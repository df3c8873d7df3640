package cli

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/spf13/cobra"
)

// paging is the --limit and --cursor of a list command.
type paging struct {
	limit  int
	cursor string
}

func (p *paging) register(cmd *cobra.Command) {
	cmd.Flags().IntVar(&p.limit, "limit", 0, "page size (default: the server's)")
	cmd.Flags().StringVar(&p.cursor, "cursor", "", "cursor of the page to show, from a previous list")
}

// set adds the page's parameters to q.
func (p paging) set(q url.Values) {
	if p.limit > 0 {
		q.Set("limit", strconv.Itoa(p.limit))
	}
	if p.cursor != "" {
		q.Set("cursor", p.cursor)
	}
}

// listPage gets one page of the list at path and prints it: the API's JSON
// with -o json, else a table of header and one row per item, and on stderr
// how to get the next page.
func listPage[T any](cmd *cobra.Command, a *app, g *globals, path string, q url.Values, header []string, row func(T) []string) error {
	body, err := a.call(cmd.Context(), g, http.MethodGet, path, q, nil)
	if err != nil {
		return err
	}
	if g.json() {
		return printJSON(cmd.OutOrStdout(), body)
	}
	var p struct {
		Items      []T     `json:"items"`
		NextCursor *string `json:"next_cursor"`
	}
	if err := decode(body, &p); err != nil {
		return err
	}
	rows := [][]string{header}
	for _, it := range p.Items {
		rows = append(rows, row(it))
	}
	if err := table(cmd.OutOrStdout(), rows); err != nil {
		return err
	}
	moreHint(cmd, p.NextCursor)
	return nil
}

// moreHint tells, on stderr so that stdout stays a clean table, how to get
// the next page.
func moreHint(cmd *cobra.Command, next *string) {
	if next != nil && *next != "" {
		fmt.Fprintf(cmd.ErrOrStderr(), "more results: add --cursor %s\n", *next)
	}
}
