package bundlertest

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

func TestPrintBench(t *testing.T) {
	var b bytes.Buffer
	PrintBench(&b, "pullship", []BenchRow{Row("s", "time", "1 s", "5 s", "5×", "≥ 5×", Met(true))})
	want := "\nscenario | metric | pullship | baseline | ratio | target | met?\n---------|--------|----------|----------|-------|--------|-----\ns        | time   | 1 s      | 5 s      | 5×    | ≥ 5×   | yes \n"
	if b.String() != want {
		t.Fatalf("got\n%q\nwant\n%q", b.String(), want)
	}
}

func TestTimed(t *testing.T) {
	if _, err := os.Stat("/usr/bin/time"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("GNU time (/usr/bin/time) is missing")
		}
		t.Skip("GNU time (/usr/bin/time) is missing")
	}
	tmp := t.TempDir()
	// A process that holds ~40 MiB: the peak RSS must show it.
	m, err := Timed(tmp, tmp, os.Environ(), nil, "sh", "-c", "head -c 41943040 /dev/zero | tail -c 41943040 >/dev/null; echo done")
	if err != nil {
		t.Fatal(err)
	}
	if m.Out != "done\n" || m.Wall <= 0 || m.RSS < 40<<10 {
		t.Fatalf("measure %+v", m)
	}
	if _, err := Timed(tmp, tmp, os.Environ(), []int{3}, "sh", "-c", "exit 3"); err != nil {
		t.Fatalf("allowed exit code: %v", err)
	}
	if m, err := Timed(tmp, tmp, os.Environ(), nil, "sh", "-c", "echo oops; exit 3"); err == nil || !strings.Contains(err.Error(), "exit 3") || m.Out != "oops\n" {
		t.Fatalf("exit 3 not allowed: %v, %+v", err, m)
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Fatalf("left behind: %v", left)
	}
}
