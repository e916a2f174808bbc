package content

import (
	"bytes"
	"encoding/binary"
)

// execKind names the executable format found by magic bytes, or "".
// Shell scripts with a shebang are deliberately not reported: they are too
// common in legitimate mail to block by default.
func execKind(b []byte) string {
	switch {
	case isPE(b):
		return "PE"
	case bytes.HasPrefix(b, []byte("\x7fELF")):
		return "ELF"
	case len(b) >= 4 && isMachO(b):
		return "Mach-O"
	case bytes.HasPrefix(b, lnkMagic):
		return "Windows shortcut"
	case bytes.HasPrefix(b, oneNoteMagic):
		return "OneNote"
	}
	return ""
}

// lnkMagic is a shell link: header size 0x4C and the ShellLink CLSID
// {00021401-0000-0000-C000-000000000046}.
var lnkMagic = []byte("\x4c\x00\x00\x00\x01\x14\x02\x00\x00\x00\x00\x00\xc0\x00\x00\x00\x00\x00\x00\x46")

// oneNoteMagic is the GUID {7B5C52E4-D88C-4DA7-AEB1-5378D02996D3} that
// starts a OneNote section (.one) file.
var oneNoteMagic = []byte("\xe4\x52\x5c\x7b\x8c\xd8\xa7\x4d\xae\xb1\x53\x78\xd0\x29\x96\xd3")

// isPE requires "MZ" and a PE signature at the e_lfanew offset, so a text
// file that merely starts with "MZ" is not taken for a program.
func isPE(b []byte) bool {
	if len(b) < 0x40 || b[0] != 'M' || b[1] != 'Z' {
		return false
	}
	off := binary.LittleEndian.Uint32(b[0x3C:])
	if off < 0x40 || uint64(off)+4 > uint64(len(b)) {
		return false
	}
	return bytes.Equal(b[off:off+4], []byte("PE\x00\x00"))
}

func isMachO(b []byte) bool {
	switch binary.BigEndian.Uint32(b) {
	case 0xFEEDFACE, 0xFEEDFACF, 0xCEFAEDFE, 0xCFFAEDFE:
		return true
	case 0xCAFEBABE:
		// Also the Java class magic; a fat Mach-O has a small
		// architecture count where a class file has its version (≥ 45).
		if len(b) < 8 {
			return false
		}
		n := binary.BigEndian.Uint32(b[4:])
		return n >= 1 && n <= 20
	}
	return false
}

// nativeExt are the extensions a file of each kind honestly carries. A
// file under one of them is left to the extension check, so an
// administrator who removes "exe" from BlockedExt can receive .exe files;
// under any other name (.txt, .pdf, none) it is a disguised program.
// ELF and Mach-O programs carry no extension, so they are always reported.
var nativeExt = map[string]map[string]bool{
	"PE": {
		"exe": true, "dll": true, "sys": true, "scr": true, "com": true,
		"cpl": true, "ocx": true, "xll": true,
	},
	"Windows shortcut": {"lnk": true},
	"OneNote":          {"one": true},
}

func isZip(b []byte) bool {
	return bytes.HasPrefix(b, []byte("PK\x03\x04")) || bytes.HasPrefix(b, []byte("PK\x05\x06"))
}
