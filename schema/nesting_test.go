package schema

import (
	"strings"
	"testing"
)

// Hostile shapes that, unbounded, crash the TOML parser (stack overflow, a
// fatal error) or make it quadratic. Each must be refused quickly, by every
// parser that goes through DecodeStrict.
func TestDecodeStrictRefusesHostileShapes(t *testing.T) {
	deep := func(open, close string, n int) string {
		return "version = " + strings.Repeat(open, n) + "1" + strings.Repeat(close, n) + "\n"
	}
	cases := map[string]string{
		"2,000,000 nested arrays":    deep("[", "]", 2_000_000),
		"nested arrays, unclosed":    "a = " + strings.Repeat("[", 2_000_000),
		"nested inline tables":       "a = " + strings.Repeat("{b = ", 500_000) + "1" + strings.Repeat("}", 500_000) + "\n",
		"200,000-part dotted key":    "a." + strings.Repeat("b.", 200_000) + "c = 1\n",
		"200,000-part table header":  "[a." + strings.Repeat("b.", 200_000) + "c]\n",
		"dotted key in inline table": "a = {" + strings.Repeat("b.", 200_000) + "c = 1}\n",
		"33 nested arrays":           deep("[", "]", MaxTOMLNesting+1),
	}
	parsers := map[string]func([]byte) error{
		"root":   func(d []byte) error { _, err := ParseRoot("root-2.toml", d); return err },
		"status": func(d []byte) error { _, err := ParseStatus("status.toml", d); return err },
		"sig":    func(d []byte) error { _, err := ParseSignatures("x.sig", d); return err },
	}
	for name, doc := range cases {
		for pname, parse := range parsers {
			err := parse([]byte(doc))
			if err == nil || !strings.Contains(err.Error(), "nested deeper") && !strings.Contains(err.Error(), "dots") && !strings.Contains(err.Error(), "bytes") {
				t.Errorf("%s, %s: %v; want a nesting refusal", name, pname, err)
			}
		}
	}
}

// What pullship writes stays well inside the bounds, strings with brackets
// and dots included.
func TestCheckShapeAcceptsRealDocuments(t *testing.T) {
	docs := []string{
		"a = [[1, 2], [3]]\nb = {c = {d = [\"[[[\", '{{{']}}\n[x.y.z]\nk.l = \"a.b.c.d\"\n",
		"s = \"\"\"\n[[[[ \\\"\"\" \nt = '''a.b.c]]]]'''\n# [[[[ ....\n[[arr]]\nv = 1.5\n",
		"\"a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.u.v.w.x.y.z.a.b.c.d.e.f.g.h\" = 1\n",
		"t = 2026-01-02T15:04:05.123Z\n",
	}
	for _, d := range docs {
		if err := checkShape("x", []byte(d)); err != nil {
			t.Errorf("%q: %v", d, err)
		}
	}
	if err := checkShape("x", []byte("a = "+strings.Repeat("[", MaxTOMLNesting)+strings.Repeat("]", MaxTOMLNesting))); err != nil {
		t.Errorf("nesting at the bound: %v", err)
	}
}
