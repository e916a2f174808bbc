// Package units reads and prints the byte sizes people type and read
// (10m, 2g), so the CLI, filters and reports agree on one notation.
package units

import (
	"errors"
	"math"
	"strconv"
	"strings"
)

// ErrSize is the error of a size that does not parse.
var ErrSize = errors.New("want a number of bytes, optionally with k, m or g (e.g. 500000, 10m)")

// ParseSize reads a byte count with an optional k, m or g suffix
// (1024-based); "" is 0. Negative numbers and overflow are errors.
func ParseSize(s string) (int64, error) {
	v := strings.TrimSpace(s)
	if v == "" {
		return 0, nil
	}
	num, mult := v, int64(1)
	switch v[len(v)-1] {
	case 'k', 'K':
		num, mult = v[:len(v)-1], 1<<10
	case 'm', 'M':
		num, mult = v[:len(v)-1], 1<<20
	case 'g', 'G':
		num, mult = v[:len(v)-1], 1<<30
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/mult || strings.HasPrefix(num, "+") {
		return 0, ErrSize
	}
	return n * mult, nil
}

// FormatSize prints n bytes in the largest 1024-based unit that keeps
// one decimal: 1536 → "1.5K", 2147483648 → "2.0G".
func FormatSize(n int64) string {
	const units = "KMGTPE"
	if n < 1024 {
		return strconv.FormatInt(n, 10)
	}
	f := float64(n)
	i := -1
	for f >= 1024 && i < len(units)-1 {
		f /= 1024
		i++
	}
	return strconv.FormatFloat(f, 'f', 1, 64) + string(units[i])
}
