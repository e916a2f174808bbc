package mailbox

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Argon2id parameters: the OWASP Password Storage Cheat Sheet minimum
// (m=19 MiB, t=2, p=1). Every hash costs 19 MiB of memory while it runs.
const (
	argonMemory  = 19456 // KiB
	argonTime    = 2
	argonThreads = 1
	argonKeyLen  = 32
	argonSaltLen = 16
)

// Bounds accepted when verifying a stored hash, so that a tampered record
// cannot make one AUTH allocate gigabytes or spin for minutes.
const (
	maxArgonMemory  = 1 << 20 // 1 GiB in KiB
	maxArgonTime    = 16
	maxArgonThreads = 16
)

var errBadHash = errors.New("malformed password hash")

// hashSem bounds concurrent Argon2 computations to the number of CPUs: an
// AUTH flood then queues here instead of allocating 19 MiB per attempt.
var hashSem = make(chan struct{}, runtime.NumCPU())

func argonKey(password string, salt []byte, time, memory uint32, threads uint8, keyLen uint32) []byte {
	hashSem <- struct{}{}
	defer func() { <-hashSem }()
	return argon2.IDKey([]byte(password), salt, time, memory, threads, keyLen)
}

var b64 = base64.RawStdEncoding

// hashPassword returns password hashed with Argon2id in PHC string format:
// $argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>.
func hashPassword(password string) (string, error) {
	salt := make([]byte, argonSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("read random salt: %w", err)
	}
	key := argonKey(password, salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, argonMemory, argonTime, argonThreads,
		b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

type argonParams struct {
	memory, time uint32
	threads      uint8
	salt, key    []byte
}

func parsePHC(s string) (argonParams, error) {
	var p argonParams
	f := strings.Split(s, "$")
	if len(f) != 6 || f[0] != "" || f[1] != "argon2id" {
		return p, errBadHash
	}
	if f[2] != "v="+strconv.Itoa(argon2.Version) {
		return p, fmt.Errorf("unsupported argon2 version %q: %w", f[2], errBadHash)
	}
	for _, kv := range strings.Split(f[3], ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return p, errBadHash
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return p, fmt.Errorf("parameter %s: %w", k, errBadHash)
		}
		switch k {
		case "m":
			p.memory = uint32(n)
		case "t":
			p.time = uint32(n)
		case "p":
			if n > maxArgonThreads {
				return p, fmt.Errorf("parameter p=%d: %w", n, errBadHash)
			}
			p.threads = uint8(n)
		default:
			return p, fmt.Errorf("unknown parameter %q: %w", k, errBadHash)
		}
	}
	if p.time < 1 || p.time > maxArgonTime || p.threads < 1 ||
		p.memory < 8*uint32(p.threads) || p.memory > maxArgonMemory {
		return p, fmt.Errorf("parameters out of range: %w", errBadHash)
	}
	var err error
	if p.salt, err = b64.DecodeString(f[4]); err != nil || len(p.salt) < 8 {
		return p, fmt.Errorf("salt: %w", errBadHash)
	}
	if p.key, err = b64.DecodeString(f[5]); err != nil || len(p.key) < 16 || len(p.key) > 128 {
		return p, fmt.Errorf("hash: %w", errBadHash)
	}
	return p, nil
}

// verifyPassword reports whether password matches the PHC string phc, in
// constant time with respect to the password.
func verifyPassword(phc, password string) (bool, error) {
	p, err := parsePHC(phc)
	if err != nil {
		return false, err
	}
	key := argonKey(password, p.salt, p.time, p.memory, p.threads, uint32(len(p.key)))
	return subtle.ConstantTimeCompare(key, p.key) == 1, nil
}

// dummySalt feeds the hash computed for unknown users, so that "no such user"
// costs as much time as "wrong password".
var dummySalt = make([]byte, argonSaltLen)

func dummyVerify(password string) {
	argonKey(password, dummySalt, argonTime, argonMemory, argonThreads, argonKeyLen)
}
