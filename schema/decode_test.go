package schema

import (
	"strings"
	"testing"
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
