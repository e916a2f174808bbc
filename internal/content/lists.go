package content

// This file is the one place that lists what is dangerous by default. The
// administrator adds to or removes from the extension list per config
// ([content] block_extensions / allow_extensions, per domain as well).

// defaultBlockedExt is the default list of blocked file extensions: file
// types that run code when the recipient double-clicks them on Windows (or
// mount something that does), and that ordinary business mail does not
// need. It follows Microsoft's Outlook "Level 1" list and the carriers of
// the malware campaigns of the last years, leaving out types with common
// honest uses.
//
// Deliberately not in the list:
//   - Macro-enabled Office files (docm, xlsm, pptm, xlam, dotm, ...):
//     finance and engineering departments exchange them routinely, and
//     Office itself has blocked macros in files from the internet
//     (Mark of the Web) since 2022. An administrator who wants them
//     refused adds them to block_extensions.
//   - svg: vector logos and diagrams are legitimate attachments. The
//     current phishing use of SVG is script or HTML inside the image, and
//     that is what the scanner refuses (rule attachment.active_content,
//     see svg.go), whatever the file's name.
//   - sh, py, pl: developers mail scripts to each other; they do not run
//     on a double click on Windows.
//   - Archives (zip, tar, gz, 7z, rar, ...): their content is inspected,
//     or, when it cannot be, refused as "cannot inspect".
var defaultBlockedExt = []string{
	// Windows programs and libraries.
	"exe", "pif", "scr", "com", "dll", "sys", "cpl", "ocx",
	"xll", // Excel add-in: a DLL that Excel loads on open (2022-2023 campaigns)
	// Installers and packages.
	"msi", "msp", "mst", "msu", "msix", "msixbundle", "appx", "appxbundle",
	"appinstaller", "application", "appref-ms", "xbap", "gadget",
	// Script hosts (Windows Script Host, PowerShell, HTML applications).
	"bat", "cmd", "vb", "vbs", "vbe", "js", "jse", "ws", "wsf", "wsh", "wsc",
	"sct", "hta", "ps1", "psm1", "psd1", "ps1xml", "psc1", "msc", "msh",
	"jar", "jnlp",
	// Shortcuts and shell files that point at or launch code.
	"lnk", "url", "website", "scf", "shb", "shs", "library-ms",
	"searchconnector-ms", "settingcontent-ms", "desktop", "rdp",
	// Office/Access containers that run embedded code without macros
	// settings protecting the user: OneNote (2023 campaigns), Access,
	// Excel web queries and SYLK.
	"one", "onepkg", "ade", "adp", "mde", "accde", "iqy", "slk",
	// Registry, setup information, help and troubleshooting packs.
	"reg", "inf", "chm", "hlp", "diagcab",
	// Disk images that mount with a double click (and hide their content
	// from the Mark of the Web).
	"iso", "img", "vhd", "vhdx", "dmg",
}

// blockedTypes maps declared Content-Types that only executables and
// script carriers use to the extension they stand for: a part with such a
// type is refused while that extension is blocked, so allow_extensions
// releases the type together with the name.
var blockedTypes = map[string]string{
	"application/x-msdownload":                      "exe",
	"application/x-dosexec":                         "exe",
	"application/x-msdos-program":                   "exe",
	"application/x-ms-dos-executable":               "exe",
	"application/x-executable":                      "exe",
	"application/vnd.microsoft.portable-executable": "exe",
	"application/x-mach-binary":                     "exe",
	"application/x-elf":                             "exe",
	"application/x-sharedlib":                       "dll",
	"application/x-ms-installer":                    "msi",
	"application/x-msi":                             "msi",
	"application/x-ms-shortcut":                     "lnk",
	"application/x-ms-application":                  "application",
	"application/x-ms-xbap":                         "xbap",
	"application/hta":                               "hta",
	"application/x-bat":                             "bat",
	"application/x-msdos-batch":                     "bat",
	"application/java-archive":                      "jar",
	"application/x-java-archive":                    "jar",
	"application/x-java-jnlp-file":                  "jnlp",
	"application/x-vbscript":                        "vbs",
	"text/vbscript":                                 "vbs",
	"application/javascript":                        "js",
	"application/x-javascript":                      "js",
	"text/javascript":                               "js",
	"application/onenote":                           "one",
	"application/msonenote":                         "one",
	"application/x-ms-appinstaller":                 "appinstaller",
	"application/appinstaller":                      "appinstaller",
	"application/msix":                              "msix",
	"application/appx":                              "appx",
	"application/x-iso9660-image":                   "iso",
	"application/x-ms-regedit":                      "reg",
}
