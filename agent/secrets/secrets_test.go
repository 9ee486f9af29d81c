package secrets

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"
)

func TestGenerateIdentityCreatesOnceWith0600(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys", "cn.age")
	r1, err := GenerateIdentity(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(r1, "age1") {
		t.Fatalf("recipient %q", r1)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("identity mode %v, want 0600", fi.Mode().Perm())
	}
	r2, err := GenerateIdentity(path)
	if err != nil {
		t.Fatal(err)
	}
	if r1 != r2 {
		t.Fatalf("second call changed the key: %s then %s", r1, r2)
	}
	id, err := LoadIdentity(path)
	if err != nil {
		t.Fatal(err)
	}
	if id.Recipient().String() != r1 {
		t.Fatalf("loaded identity's recipient %s, want %s", id.Recipient(), r1)
	}
}

func TestGenerateIdentityRefusesGarbage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cn.age")
	if err := os.WriteFile(path, []byte("AGE-SECRET-KEY-1NOTAKEY\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := GenerateIdentity(path)
	if err == nil || !strings.Contains(err.Error(), "not an age X25519 identity") {
		t.Fatalf("got %v, want a parse error", err)
	}
	if strings.Contains(err.Error(), "NOTAKEY") {
		t.Fatalf("error echoes the key file: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "AGE-SECRET-KEY-1NOTAKEY\n" {
		t.Fatalf("file was overwritten: %q", b)
	}
}

func encrypt(t *testing.T, plain []byte, rcpts ...age.Recipient) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := age.Encrypt(&buf, rcpts...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(plain); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestDecrypt(t *testing.T) {
	dir := t.TempDir()
	mine, other := filepath.Join(dir, "cn.age"), filepath.Join(dir, "sg.age")
	rcpt, err := GenerateIdentity(mine)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := GenerateIdentity(other); err != nil {
		t.Fatal(err)
	}
	r, err := age.ParseX25519Recipient(rcpt)
	if err != nil {
		t.Fatal(err)
	}
	plain := []byte("redis.password = s3cret\n")
	ct := encrypt(t, plain, r)

	got, err := Decrypt(mine, ct, 1024)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, plain) {
		t.Fatalf("decrypted %q, want %q", got, plain)
	}
	if _, err := Decrypt(other, ct, 1024); !errors.Is(err, ErrWrongIdentity) {
		t.Fatalf("another node's identity: got %v, want ErrWrongIdentity", err)
	}
	if _, err := Decrypt(mine, ct, int64(len(plain))-1); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("over the bound: got %v", err)
	}
	if _, err := Decrypt(mine, ct[:len(ct)-1], 1024); err == nil {
		t.Fatal("truncated ciphertext decrypted")
	}
	if _, err := Decrypt(filepath.Join(dir, "missing.age"), ct, 1024); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing identity: got %v", err)
	}
}

func FuzzParseIdentity(f *testing.F) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte("# comment\n" + id.String() + "\n"))
	f.Add([]byte(id.String() + "\n" + id.String() + "\n"))
	f.Add([]byte(""))
	f.Add([]byte("AGE-SECRET-KEY-1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		id, err := ParseIdentity(data)
		if err == nil && id == nil {
			t.Fatal("nil identity without error")
		}
	})
}

func FuzzDecrypt(f *testing.F) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		f.Fatal(err)
	}
	var buf bytes.Buffer
	w, _ := age.Encrypt(&buf, id.Recipient())
	w.Write([]byte("hello"))
	w.Close()
	f.Add(buf.Bytes())
	f.Add([]byte("-----BEGIN AGE ENCRYPTED FILE-----\n-----END AGE ENCRYPTED FILE-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := DecryptWith(id, data, 16)
		if err == nil && len(out) > 16 {
			t.Fatalf("%d bytes returned, bound 16", len(out))
		}
	})
}
