package schema

import (
	"bufio"
	"bytes"
	"encoding"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// MaxFileSize bounds every TOML document pullship parses. Manifests of the
// largest fleets stay far below it; anything larger is refused before parsing.
const MaxFileSize = 4 << 20

// DecodeStrict decodes the TOML document data (read from the file called name)
// into v. Unknown keys are an error naming the file, the line and the key, as
// are keys whose case differs from the field they would fill.
func DecodeStrict(name string, data []byte, v any) error {
	if len(data) > MaxFileSize {
		return fmt.Errorf("%s: %d bytes is larger than the %d bytes allowed", name, len(data), MaxFileSize)
	}
	if bytes.IndexByte(data, 0) >= 0 {
		return fmt.Errorf("%s: contains a NUL byte", name)
	}
	if err := checkShape(name, data); err != nil {
		return err
	}
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(v)
	if err != nil {
		var pe toml.ParseError
		if asParseError(err, &pe) {
			return fmt.Errorf("%s:%d: %s", name, pe.Position.Line, pe.Message)
		}
		return fmt.Errorf("%s: %w", name, err)
	}
	timeType := reflect.TypeFor[time.Time]()
	for _, k := range md.Keys() {
		ft, want := keyField(k, reflect.TypeOf(v))
		if want != "" {
			return fmt.Errorf("%s:%d: key %q: write %q (keys are case-sensitive)", name, keyLine(data, k), k.String(), want)
		}
		if ft == timeType && md.Type(k...) != "Datetime" {
			return fmt.Errorf("%s:%d: key %q: want a TOML datetime like 2026-01-02T15:04:05Z, not a %s", name, keyLine(data, k), k.String(), strings.ToLower(md.Type(k...)))
		}
	}
	var generic map[string]any
	if _, err := toml.Decode(string(data), &generic); err == nil {
		if err := checkTimes(name, data, generic, nil); err != nil {
			return err
		}
	}
	if und := md.Undecoded(); len(und) > 0 {
		k := und[0]
		return fmt.Errorf("%s:%d: unknown key %q", name, keyLine(data, k), k.String())
	}
	return nil
}

// keyField walks key k through type t the way the decoder fills it. It
// returns the Go type the key's value fills (nil when unknown or inside an
// untyped value), and the real field name when a component matched a field
// only case-insensitively (BurntSushi/toml accepts those; pullship does not).
func keyField(k toml.Key, t reflect.Type) (final reflect.Type, caseWant string) {
	textU := reflect.TypeFor[encoding.TextUnmarshaler]()
	tomlU := reflect.TypeFor[toml.Unmarshaler]()
	for _, part := range k {
		for t != nil && (t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			t = t.Elem()
		}
		if t == nil || reflect.PointerTo(t).Implements(textU) || reflect.PointerTo(t).Implements(tomlU) {
			return nil, ""
		}
		switch t.Kind() {
		case reflect.Map:
			t = t.Elem()
		case reflect.Struct:
			f, exact, fold := fieldFor(t, part)
			if !exact {
				return nil, fold // unknown keys are reported as undecoded
			}
			t = f
		default:
			return nil, ""
		}
	}
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t, ""
}

// checkTimes refuses local dates and times (no offset) anywhere in the
// document: every pullship time is an RFC 3339 UTC datetime.
func checkTimes(name string, data []byte, v any, path toml.Key) error {
	switch x := v.(type) {
	case time.Time:
		switch x.Location().String() {
		case "datetime-local", "date-local", "time-local":
			return fmt.Errorf("%s:%d: key %q: local date or time; write an RFC 3339 UTC datetime like 2026-01-02T15:04:05Z", name, keyLine(data, path), path.String())
		}
	case map[string]any:
		for k, e := range x {
			if err := checkTimes(name, data, e, append(path[:len(path):len(path)], k)); err != nil {
				return err
			}
		}
	case []map[string]any:
		for _, e := range x {
			if err := checkTimes(name, data, e, path); err != nil {
				return err
			}
		}
	case []any:
		for _, e := range x {
			if err := checkTimes(name, data, e, path); err != nil {
				return err
			}
		}
	}
	return nil
}

func fieldFor(t reflect.Type, key string) (ft reflect.Type, exact bool, fold string) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		if name == key {
			return f.Type, true, ""
		}
		if fold == "" && strings.EqualFold(name, key) {
			fold = name
		}
	}
	// Fields of embedded structs, which outer fields shadow (as the
	// decoder does).
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.Anonymous && f.Type.Kind() == reflect.Struct && f.Tag.Get("toml") == "" {
			if ft, exact, efold := fieldFor(f.Type, key); exact {
				return ft, true, ""
			} else if fold == "" {
				fold = efold
			}
		}
	}
	return nil, false, fold
}

func asParseError(err error, pe *toml.ParseError) bool {
	p, ok := err.(toml.ParseError)
	if ok {
		*pe = p
	}
	return ok
}

// keyLine finds the line where key k is defined: the last line whose key (or
// table header) names k's final part inside k's parent table. It returns 0
// when it cannot tell; the key name in the error is then still exact.
func keyLine(data []byte, k toml.Key) int {
	if len(k) == 0 {
		return 0
	}
	parent := strings.Join(k[:len(k)-1], ".")
	last := k[len(k)-1]
	table := ""
	line, found := 0, 0
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), MaxFileSize)
	for sc.Scan() {
		line++
		t := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(t, "[") {
			h := strings.Trim(t, "[] \t")
			if i := strings.IndexByte(h, '#'); i >= 0 {
				h = strings.TrimRight(strings.Trim(h[:i], "[] \t"), " ")
			}
			table = strings.ReplaceAll(h, " ", "")
			if table == strings.Join(k, ".") {
				found = line
			}
			continue
		}
		eq := strings.IndexByte(t, '=')
		if eq <= 0 {
			continue
		}
		name := strings.Trim(strings.TrimSpace(t[:eq]), `"'`)
		full := name
		if table != "" {
			full = table + "." + name
		}
		if name == last && table == parent || full == strings.Join(k, ".") {
			found = line
		}
	}
	return found
}
