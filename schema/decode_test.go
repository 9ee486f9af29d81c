package schema

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestDecodeStrictUnknownKey(t *testing.T) {
	type inner struct {
		A int `toml:"a"`
	}
	type doc struct {
		Name  string  `toml:"name"`
		Items []inner `toml:"item"`
	}
	src := "name = \"x\"\n\n[[item]]\na = 1\n\n[[item]]\na = 2\nbogus = 3\n"
	var d doc
	err := DecodeStrict("f.toml", []byte(src), &d)
	if err == nil || !strings.Contains(err.Error(), `f.toml:8: unknown key "item.bogus"`) {
		t.Fatalf("got %v", err)
	}
	if err := DecodeStrict("f.toml", []byte("name = \n"), &d); err == nil || !strings.HasPrefix(err.Error(), "f.toml:1:") {
		t.Fatalf("parse error without line: %v", err)
	}
}

func TestDecodeStrictKeyCase(t *testing.T) {
	type inner struct {
		Name string `toml:"name"`
	}
	type doc struct {
		Version int              `toml:"version"`
		Inner   inner            `toml:"inner"`
		List    []inner          `toml:"list"`
		Env     map[string]inner `toml:"env"`
	}
	for src, want := range map[string]string{
		"Version = 1\n":                                    `f.toml:1: key "Version": write "version"`,
		"[Inner]\nname = \"x\"\n":                          `f.toml:1: key "Inner": write "inner"`,
		"[inner]\nNAME = \"x\"\n":                          `f.toml:2: key "inner.NAME": write "name"`,
		"[[list]]\nname = \"a\"\n[[list]]\nnAme = \"b\"\n": `f.toml:4: key "list.nAme": write "name"`,
		"version = 1\nVersion = 2\n":                       `key "Version": write "version"`,
		"[env.Any_Case]\nname = \"x\"\n":                   "",
		"[env.x]\nName = \"x\"\n":                          `key "env.x.Name": write "name"`,
	} {
		var d doc
		err := DecodeStrict("f.toml", []byte(src), &d)
		if want == "" {
			if err != nil {
				t.Errorf("%q: %v", src, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want %q", src, err, want)
		}
	}
}

func TestDecodeStrictTimes(t *testing.T) {
	type doc struct {
		At   time.Time      `toml:"at"`
		Vars map[string]any `toml:"vars"`
	}
	for src, want := range map[string]string{
		"at = 2026-01-02T03:04:05Z\n":                 "",
		"at = \"2026-01-02T03:04:05Z\"\n":             `f.toml:1: key "at": want a TOML datetime`,
		"at = 2026-01-02T03:04:05\n":                  `f.toml:1: key "at": local date or time`,
		"at = 2026-01-02\n":                           `local date or time`,
		"[vars]\nx = 1\nwhen = 2026-01-02T03:04:05\n": `f.toml:3: key "vars.when": local date or time`,
		"at = 2026-01-02T03:04:05+08:00\n":            "",
	} {
		var d doc
		err := DecodeStrict("f.toml", []byte(src), &d)
		if want == "" {
			if err != nil {
				t.Errorf("%q: %v", src, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want %q", src, err, want)
		}
	}
}

func TestRefused(t *testing.T) {
	base := errors.New("1 of 2 required signatures valid")
	err := fmt.Errorf("verify release 3: %w", Refused(base))
	if !errors.Is(err, ErrRefused) || !errors.Is(err, base) {
		t.Fatalf("errors.Is(%v, ErrRefused/base) = false", err)
	}
	if err.Error() != "verify release 3: 1 of 2 required signatures valid" {
		t.Fatalf("message changed: %q", err)
	}
	if errors.Is(base, ErrRefused) || Refused(nil) != nil {
		t.Fatal("an unmarked error is a refusal, or Refused(nil) is not nil")
	}
}
