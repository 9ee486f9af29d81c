package bundlertest

import (
	"bytes"
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
