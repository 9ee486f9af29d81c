// Package cluster reads and repairs a clustered service's membership, as
// seen by the service's own admin CLI (VerneMQ's `vmq-admin cluster show`
// and `vmq-admin cluster join`), without knowing anything else about the
// service.
//
// The parsers accept exactly the formats the real tool prints (captures in
// testdata/) and reject everything else with an error that says where the
// input went wrong: the output of a command running inside a container is
// untrusted input. Check reads the view; Ensure joins the node to the
// cluster when it is alone, retrying with bounded exponential backoff.
package cluster

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits on untrusted `cluster show` output. A real cluster has a handful of
// nodes; anything near these bounds is a broken or hostile tool.
const (
	MaxOutput  = 1 << 20 // bytes of output Parse accepts
	MaxMembers = 10000   // rows Parse accepts
	maxNodeLen = 255     // bytes in one node name
)

// Output formats accepted by Parse.
const (
	FormatTable = "vmq-table" // either table style of `vmq-admin cluster show`
	FormatJSON  = "vmq-json"  // `vmq-admin cluster show --format=json`
	FormatAuto  = "auto"      // JSON when the output starts with '{', else a table
)

// Member is one row of the cluster view: a node name (`name@host`) and
// whether the local node currently reaches it.
type Member struct {
	Node    string
	Running bool
}

// ErrTooLarge is returned (wrapped) when the output exceeds MaxOutput bytes
// or MaxMembers rows.
var ErrTooLarge = errors.New("cluster show output too large")

// Parse parses the output of `cluster show` in the given format ("vmq-table",
// "vmq-json" or "auto"; "" means "auto"). It returns the members in output
// order. Unknown columns or keys, malformed rows, invalid node names,
// duplicate nodes and oversize input are errors; an empty member list is not.
func Parse(format string, out []byte) ([]Member, error) {
	if len(out) > MaxOutput {
		return nil, fmt.Errorf("parse cluster view: %d bytes: %w (limit %d)", len(out), ErrTooLarge, MaxOutput)
	}
	switch format {
	case FormatTable:
		return ParseTable(out)
	case FormatJSON:
		return ParseJSON(out)
	case FormatAuto, "":
		trimmed := bytes.TrimLeft(out, " \t\r\n")
		switch {
		case len(trimmed) > 0 && trimmed[0] == '{':
			return ParseJSON(out)
		case len(trimmed) > 0 && trimmed[0] == '+':
			return ParseTable(out)
		}
		return nil, fmt.Errorf("parse cluster view: output is neither a table nor JSON: %q", clip(trimmed))
	}
	return nil, fmt.Errorf("parse cluster view: unknown format %q (want %q, %q or %q)", format, FormatTable, FormatJSON, FormatAuto)
}

// ParseTable parses the table printed by `vmq-admin cluster show`, in both
// styles VerneMQ has used: the newer one (a separator line after every row,
// cells padded with one space) and the older clique one (no separators
// between rows, centred header, unpadded cells). Columns must be exactly
// Node and Running, in either order; Running is `true` or `false`.
func ParseTable(out []byte) ([]Member, error) {
	if len(out) > MaxOutput {
		return nil, fmt.Errorf("parse cluster table: %d bytes: %w (limit %d)", len(out), ErrTooLarge, MaxOutput)
	}
	if !utf8.Valid(out) {
		return nil, errors.New("parse cluster table: output is not valid UTF-8")
	}
	text := strings.TrimSuffix(string(out), "\n")
	lines := strings.Split(text, "\n")
	var (
		widths          []int // rune widths of the columns, from the first border
		nodeCol, runCol = -1, -1
		members         []Member
		seen            = map[string]bool{}
		lastBorder      bool
	)
	if len(lines) > 2*MaxMembers+4 {
		return nil, fmt.Errorf("parse cluster table: %d lines: %w", len(lines), ErrTooLarge)
	}
	for i, line := range lines {
		n := i + 1
		line = strings.TrimSuffix(line, "\r")
		switch {
		case strings.HasPrefix(line, "+"):
			w, err := parseBorder(line)
			if err != nil {
				return nil, fmt.Errorf("parse cluster table: line %d: %w", n, err)
			}
			if widths == nil {
				widths = w
			} else if !equalInts(w, widths) {
				return nil, fmt.Errorf("parse cluster table: line %d: border does not match the first border", n)
			}
			if lastBorder {
				return nil, fmt.Errorf("parse cluster table: line %d: two borders in a row", n)
			}
			lastBorder = true
			continue
		case strings.HasPrefix(line, "|"):
		default:
			return nil, fmt.Errorf("parse cluster table: line %d: want a border or a row, got %q", n, clip([]byte(line)))
		}
		lastBorder = false
		if widths == nil {
			return nil, fmt.Errorf("parse cluster table: line %d: row before the top border", n)
		}
		cells, err := splitRow(line, widths)
		if err != nil {
			return nil, fmt.Errorf("parse cluster table: line %d: %w", n, err)
		}
		if nodeCol < 0 {
			// The header must be the only row between the first two borders.
			if n != 2 {
				return nil, fmt.Errorf("parse cluster table: line %d: header must follow the top border", n)
			}
			for c, name := range cells {
				switch name {
				case "Node":
					nodeCol = c
				case "Running":
					runCol = c
				default:
					return nil, fmt.Errorf("parse cluster table: unknown column %q (want Node and Running)", clip([]byte(name)))
				}
			}
			if len(cells) != 2 || nodeCol < 0 || runCol < 0 {
				return nil, errors.New("parse cluster table: header must name Node and Running once each")
			}
			continue
		}
		if n == 3 {
			return nil, errors.New("parse cluster table: line 3: header must be followed by a border")
		}
		if len(members) == MaxMembers {
			return nil, fmt.Errorf("parse cluster table: more than %d rows: %w", MaxMembers, ErrTooLarge)
		}
		m, err := member(cells[nodeCol], cells[runCol])
		if err != nil {
			return nil, fmt.Errorf("parse cluster table: line %d: %w", n, err)
		}
		if seen[m.Node] {
			return nil, fmt.Errorf("parse cluster table: line %d: duplicate node %q", n, m.Node)
		}
		seen[m.Node] = true
		members = append(members, m)
	}
	switch {
	case widths == nil:
		return nil, errors.New("parse cluster table: empty output")
	case nodeCol < 0:
		return nil, errors.New("parse cluster table: no header row")
	case len(lines) < 3 || !lastBorder:
		return nil, errors.New("parse cluster table: table is not closed by a border")
	}
	return members, nil
}

// parseBorder parses `+----+-------+` into the column widths.
func parseBorder(line string) ([]int, error) {
	if len(line) < 3 || !strings.HasSuffix(line, "+") {
		return nil, fmt.Errorf("malformed border %q", clip([]byte(line)))
	}
	var widths []int
	for _, seg := range strings.Split(line[1:len(line)-1], "+") {
		if seg == "" || strings.Trim(seg, "-") != "" {
			return nil, fmt.Errorf("malformed border %q", clip([]byte(line)))
		}
		widths = append(widths, len(seg))
	}
	return widths, nil
}

// splitRow splits `|a |b|` into trimmed cells, checking that every cell is
// exactly as wide as its column: a shifted cell means a corrupt table.
func splitRow(line string, widths []int) ([]string, error) {
	if len(line) < 2 || !strings.HasSuffix(line, "|") {
		return nil, fmt.Errorf("row does not end with '|': %q", clip([]byte(line)))
	}
	raw := strings.Split(line[1:len(line)-1], "|")
	if len(raw) != len(widths) {
		return nil, fmt.Errorf("row has %d cells, table has %d columns", len(raw), len(widths))
	}
	cells := make([]string, len(raw))
	for i, c := range raw {
		if utf8.RuneCountInString(c) != widths[i] {
			return nil, fmt.Errorf("cell %d is %d wide, column is %d", i+1, utf8.RuneCountInString(c), widths[i])
		}
		cells[i] = strings.Trim(c, " ")
	}
	return cells, nil
}

// member validates one row's values.
func member(node, running string) (Member, error) {
	if err := checkNode(node); err != nil {
		return Member{}, err
	}
	switch running {
	case "true":
		return Member{Node: node, Running: true}, nil
	case "false":
		return Member{Node: node, Running: false}, nil
	}
	return Member{}, fmt.Errorf("node %s: Running is %q, want true or false", node, clip([]byte(running)))
}

// checkNode accepts an Erlang-style node name: `name@host`, printable, no
// spaces, bounded.
func checkNode(node string) error {
	if node == "" {
		return errors.New("empty node name")
	}
	if len(node) > maxNodeLen {
		return fmt.Errorf("node name longer than %d bytes", maxNodeLen)
	}
	for _, r := range node {
		if unicode.IsSpace(r) || !unicode.IsPrint(r) || r == '|' {
			return fmt.Errorf("node name %q contains a space or control character", node)
		}
	}
	at := strings.IndexByte(node, '@')
	if at <= 0 || at == len(node)-1 || strings.Count(node, "@") != 1 {
		return fmt.Errorf("node name %q is not name@host", node)
	}
	return nil
}

// ParseJSON parses `vmq-admin cluster show --format=json`:
// {"table":[{"Node":"VerneMQ@10.0.0.1","Running":true},...],"type":"table"}.
// Keys are matched exactly (encoding/json alone would accept "node" for
// "Node"), unknown or missing keys are errors, and nothing but whitespace may
// follow the object.
func ParseJSON(out []byte) ([]Member, error) {
	if len(out) > MaxOutput {
		return nil, fmt.Errorf("parse cluster json: %d bytes: %w (limit %d)", len(out), ErrTooLarge, MaxOutput)
	}
	var top map[string]json.RawMessage
	if err := decodeOne(out, &top); err != nil {
		return nil, fmt.Errorf("parse cluster json: %w", err)
	}
	if top == nil {
		return nil, errors.New("parse cluster json: want an object, got null")
	}
	if err := exactKeys(top, "table", "type"); err != nil {
		return nil, fmt.Errorf("parse cluster json: %w", err)
	}
	var typ string
	if err := json.Unmarshal(top["type"], &typ); err != nil || typ != "table" {
		return nil, fmt.Errorf("parse cluster json: \"type\" is %s, want \"table\"", clip(top["type"]))
	}
	var rows []map[string]json.RawMessage
	if err := json.Unmarshal(top["table"], &rows); err != nil {
		return nil, fmt.Errorf("parse cluster json: \"table\": %w", err)
	}
	if len(rows) > MaxMembers {
		return nil, fmt.Errorf("parse cluster json: %d rows: %w (limit %d)", len(rows), ErrTooLarge, MaxMembers)
	}
	members := make([]Member, 0, len(rows))
	seen := map[string]bool{}
	for i, row := range rows {
		if row == nil {
			return nil, fmt.Errorf("parse cluster json: row %d: want an object, got null", i+1)
		}
		if err := exactKeys(row, "Node", "Running"); err != nil {
			return nil, fmt.Errorf("parse cluster json: row %d: %w", i+1, err)
		}
		var (
			node    string
			running bool
		)
		if err := json.Unmarshal(row["Node"], &node); err != nil {
			return nil, fmt.Errorf("parse cluster json: row %d: \"Node\" is %s, want a string", i+1, clip(row["Node"]))
		}
		if err := json.Unmarshal(row["Running"], &running); err != nil || bytes.Equal(row["Running"], []byte("null")) {
			return nil, fmt.Errorf("parse cluster json: row %d: \"Running\" is %s, want true or false", i+1, clip(row["Running"]))
		}
		if err := checkNode(node); err != nil {
			return nil, fmt.Errorf("parse cluster json: row %d: %w", i+1, err)
		}
		if seen[node] {
			return nil, fmt.Errorf("parse cluster json: row %d: duplicate node %q", i+1, node)
		}
		seen[node] = true
		members = append(members, Member{Node: node, Running: running})
	}
	return members, nil
}

// decodeOne decodes exactly one JSON value from data.
func decodeOne(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err == nil {
		return errors.New("trailing data after the JSON object")
	}
	if dec.InputOffset() != int64(len(bytes.TrimRight(data, " \t\r\n"))) {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}

// exactKeys requires obj to hold exactly the given keys (case-sensitive).
func exactKeys(obj map[string]json.RawMessage, keys ...string) error {
	for _, k := range keys {
		if _, ok := obj[k]; !ok {
			return fmt.Errorf("missing key %q", k)
		}
	}
	if len(obj) != len(keys) {
		for k := range obj {
			if !contains(keys, k) {
				return fmt.Errorf("unknown key %q", clip([]byte(k)))
			}
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// clip shortens untrusted text quoted in an error message.
func clip(b []byte) string {
	const max = 80
	if len(b) > max {
		return string(b[:max]) + "…"
	}
	return string(b)
}
