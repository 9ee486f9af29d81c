package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseSamples(t *testing.T) {
	ten := []Member{{"VerneMQ@10.0.0.1", true}, {"VerneMQ@10.0.0.2", true}, {"VerneMQ@10.0.0.3", true}, {"VerneMQ@10.0.0.4", true}}
	tests := []struct {
		file   string
		format string
		want   []Member
	}{
		{"vmq-admin-cluster-show.new.txt", FormatTable, []Member{{"VerneMQ@10.0.11.230", false}, {"VerneMQ@10.0.11.231", true}}},
		{"vmq-admin-cluster-show.old.txt", FormatTable, ten},
		{"vmq-admin-cluster-show.json", FormatJSON, []Member{{"VerneMQ@10.0.0.1", true}, {"VerneMQ@10.0.0.2", false}}},
		{"vmq-admin-cluster-show.single.old.txt", FormatTable, []Member{{"VerneMQ@127.0.0.1", true}}},
		{"vmq-admin-cluster-show.single.json", FormatJSON, []Member{{"VerneMQ@10.0.0.1", true}}},
		{"vmq-admin-cluster-show.four.new.txt", FormatTable, []Member{{"VerneMQ@10.0.0.1", true}, {"VerneMQ@10.0.0.2", true}, {"VerneMQ@10.0.0.3", false}, {"VerneMQ@10.0.0.4", true}}},
	}
	for _, tt := range tests {
		for _, format := range []string{tt.format, FormatAuto, ""} {
			t.Run(tt.file+"/"+format, func(t *testing.T) {
				got, err := Parse(format, readTestdata(t, tt.file))
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, tt.want) {
					t.Fatalf("got %v, want %v", got, tt.want)
				}
			})
		}
	}
}

func TestParseCRLFAndColumnOrder(t *testing.T) {
	in := "+-------+----------------+\r\n|Running|      Node      |\r\n+-------+----------------+\r\n| false |VerneMQ@10.0.0.9|\r\n+-------+----------------+\r\n"
	got, err := ParseTable([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if want := []Member{{"VerneMQ@10.0.0.9", false}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestParseEmptyTable(t *testing.T) {
	got, err := ParseTable([]byte("+------+---------+\n| Node | Running |\n+------+---------+\n"))
	if err != nil || len(got) != 0 {
		t.Fatalf("got %v, %v; want no members, no error", got, err)
	}
}

func TestParseRejectsBad(t *testing.T) {
	entries, err := os.ReadDir("testdata/bad")
	if err != nil {
		t.Fatal(err)
	}
	wantErr := map[string]string{
		"header-short.txt":     "line 2",
		"unknown-column.txt":   `unknown column "Uptime"`,
		"duplicate.txt":        `duplicate node "VerneMQ@10.0.0.1"`,
		"shifted-cell.txt":     "line 4",
		"bad-running.txt":      `Running is "yes"`,
		"unclosed.txt":         "not closed",
		"no-at.txt":            "not name@host",
		"not-a-table.txt":      "neither a table nor JSON",
		"duplicate.json":       "duplicate node",
		"lowercase-key.json":   `"Node"`,
		"string-running.json":  "want true or false",
		"extra-key.json":       `unknown key "Extra"`,
		"trailing.json":        "trailing data",
		"wrong-type.json":      `want "table"`,
		"missing-running.json": `missing key "Running"`,
	}
	if len(entries) != len(wantErr) {
		t.Fatalf("%d files in testdata/bad, %d expectations", len(entries), len(wantErr))
	}
	for _, e := range entries {
		t.Run(e.Name(), func(t *testing.T) {
			_, err := Parse(FormatAuto, readTestdata(t, "bad/"+e.Name()))
			if err == nil {
				t.Fatal("parsed without error")
			}
			if !strings.Contains(err.Error(), wantErr[e.Name()]) {
				t.Fatalf("error %q does not mention %q", err, wantErr[e.Name()])
			}
		})
	}
}

func TestParseFormatMismatch(t *testing.T) {
	if _, err := Parse(FormatTable, readTestdata(t, "vmq-admin-cluster-show.json")); err == nil {
		t.Fatal("table parser accepted JSON")
	}
	if _, err := Parse(FormatJSON, readTestdata(t, "vmq-admin-cluster-show.old.txt")); err == nil {
		t.Fatal("JSON parser accepted a table")
	}
	if _, err := Parse("yaml", nil); err == nil || !strings.Contains(err.Error(), "unknown format") {
		t.Fatalf("unknown format: %v", err)
	}
}

func TestParseLimits(t *testing.T) {
	big := bytes.Repeat([]byte(" "), MaxOutput+1)
	for _, f := range []string{FormatTable, FormatJSON, FormatAuto} {
		if _, err := Parse(f, big); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("%s: %d bytes: got %v, want ErrTooLarge", f, len(big), err)
		}
	}
	// Rows beyond MaxMembers within the byte limit.
	var b strings.Builder
	b.WriteString(`{"table":[`)
	for i := 0; i <= MaxMembers; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"Node":"a@` + strings.Repeat("x", 1+i%3) + `","Running":true}`)
	}
	b.WriteString(`],"type":"table"}`)
	if _, err := ParseJSON([]byte(b.String())); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("%d rows: got %v, want ErrTooLarge", MaxMembers+1, err)
	}
	var tb strings.Builder
	tb.WriteString("+-------+-------+\n|Node   |Running|\n+-------+-------+\n")
	for i := 0; i <= MaxMembers; i++ {
		fmt.Fprintf(&tb, "|a@%05d| true  |\n", i)
	}
	tb.WriteString("+-------+-------+\n")
	if _, err := ParseTable([]byte(tb.String())); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("%d table rows: got %v, want ErrTooLarge", MaxMembers+1, err)
	}
}

// checkMembers holds for every successful parse.
func checkMembers(t *testing.T, ms []Member) {
	seen := map[string]bool{}
	for _, m := range ms {
		if err := checkNode(m.Node); err != nil {
			t.Fatalf("parser returned invalid node %q: %v", m.Node, err)
		}
		if seen[m.Node] {
			t.Fatalf("parser returned duplicate node %q", m.Node)
		}
		seen[m.Node] = true
	}
	if len(ms) > MaxMembers {
		t.Fatalf("parser returned %d members", len(ms))
	}
}

func FuzzParseTable(f *testing.F) {
	for _, name := range []string{"vmq-admin-cluster-show.new.txt", "vmq-admin-cluster-show.old.txt", "vmq-admin-cluster-show.four.new.txt", "vmq-admin-cluster-show.single.old.txt", "bad/shifted-cell.txt", "bad/duplicate.txt"} {
		f.Add(readTestdata(f, name))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		ms, err := ParseTable(in)
		if err != nil {
			return
		}
		checkMembers(t, ms)
		// A table that parses also parses through auto detection, the same way.
		again, err := Parse(FormatAuto, in)
		if err != nil || !reflect.DeepEqual(ms, again) {
			t.Fatalf("auto parse differs: %v, %v vs %v", again, err, ms)
		}
	})
}

func FuzzParseJSON(f *testing.F) {
	for _, name := range []string{"vmq-admin-cluster-show.json", "vmq-admin-cluster-show.single.json", "bad/duplicate.json", "bad/lowercase-key.json", "bad/trailing.json"} {
		f.Add(readTestdata(f, name))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		ms, err := ParseJSON(in)
		if err != nil {
			return
		}
		checkMembers(t, ms)
	})
}
