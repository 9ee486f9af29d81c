package schema

import "fmt"

// Bounds on the shape of every TOML document pullship parses, checked
// before the TOML parser sees it: the parser recurses once per nested array
// or inline table (2,000,000 brackets overflow the stack, a fatal error no
// recover catches), and its cost grows with the square of a dotted key's
// length. No pullship format comes near either bound.
const (
	MaxTOMLNesting = 32 // open arrays and inline tables at once
	MaxTOMLKeyDots = 32 // dots in one key or table header
)

// checkShape refuses data whose arrays or inline tables nest deeper than
// MaxTOMLNesting, or a key or table header with more than MaxTOMLKeyDots
// dots. It tracks strings and comments as TOML does, so brackets and dots
// inside them do not count; it may misjudge a document the TOML parser
// would refuse anyway, never one it accepts.
func checkShape(name string, data []byte) error {
	const (
		inKey   = iota // a key, before its '=' (or a table header)
		inValue        // after '=' on a top-level line
	)
	// ctx is the stack of open arrays ('[') and inline tables ('{').
	var ctx []byte
	pos := inKey
	dots, line := 0, 1
	atLineStart := true
	for i := 0; i < len(data); i++ {
		c := data[i]
		switch {
		case c == '\n':
			line++
			if len(ctx) == 0 {
				pos, dots, atLineStart = inKey, 0, true
			}
			continue
		case c == ' ' || c == '\t' || c == '\r':
			continue
		case c == '#':
			for i < len(data) && data[i] != '\n' {
				i++
			}
			i--
			continue
		case c == '"' || c == '\'':
			end, nl := skipString(data, i)
			line += nl
			i = end - 1
			atLineStart = false
			continue
		}
		if atLineStart && len(ctx) == 0 && c == '[' {
			// A table header: [a.b] or [[a.b]]; its dots are key dots.
			atLineStart = false
			j := i + 1
			if j < len(data) && data[j] == '[' {
				j++
			}
			for ; j < len(data) && data[j] != ']' && data[j] != '\n'; j++ {
				switch data[j] {
				case '"', '\'':
					end, _ := skipString(data, j)
					j = end - 1
				case '.':
					if dots++; dots > MaxTOMLKeyDots {
						return fmt.Errorf("%s:%d: a table name with more than %d dots", name, line, MaxTOMLKeyDots)
					}
				}
			}
			i = j - 1
			continue
		}
		atLineStart = false
		inTable := len(ctx) > 0 && ctx[len(ctx)-1] == '{'
		switch c {
		case '=':
			pos, dots = inValue, 0
		case '.':
			if pos == inKey {
				if dots++; dots > MaxTOMLKeyDots {
					return fmt.Errorf("%s:%d: a key with more than %d dots", name, line, MaxTOMLKeyDots)
				}
			}
		case '[', '{':
			if len(ctx) >= MaxTOMLNesting {
				return fmt.Errorf("%s:%d: arrays or inline tables nested deeper than %d", name, line, MaxTOMLNesting)
			}
			ctx = append(ctx, c)
			if c == '{' {
				pos, dots = inKey, 0
			} else {
				pos = inValue
			}
		case ']', '}':
			if len(ctx) > 0 {
				ctx = ctx[:len(ctx)-1]
			}
			pos = inValue
		case ',':
			if inTable {
				pos, dots = inKey, 0
			}
		}
	}
	return nil
}

// skipString returns the index just past the string starting at data[i]
// (basic, literal, or their multi-line forms) and the newlines it holds. A
// single-line string ends at a newline, where TOML refuses it anyway.
func skipString(data []byte, i int) (end, newlines int) {
	q := data[i]
	if i+2 < len(data) && data[i+1] == q && data[i+2] == q {
		for j := i + 3; j < len(data); j++ {
			switch {
			case data[j] == '\n':
				newlines++
			case q == '"' && data[j] == '\\':
				if j+1 < len(data) && data[j+1] == '\n' {
					newlines++
				}
				j++
			case data[j] == q && j+2 < len(data) && data[j+1] == q && data[j+2] == q:
				// Up to two more quotes may close it ("""""" ends a string of two).
				k := j + 3
				for n := 0; n < 2 && k < len(data) && data[k] == q; n++ {
					k++
				}
				return k, newlines
			}
		}
		return len(data), newlines
	}
	for j := i + 1; j < len(data); j++ {
		switch {
		case data[j] == '\n':
			return j, newlines
		case q == '"' && data[j] == '\\':
			j++
		case data[j] == q:
			return j + 1, newlines
		}
	}
	return len(data), newlines
}
