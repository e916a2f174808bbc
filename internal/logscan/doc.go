// Package logscan digests mail server logs into per-sender, per-client,
// per-user and per-hour counts and flags worm-like and relay-like patterns.
//
// Why: an admin on a legacy server finds infected PCs by reading
// /var/log/maillog by hand, and cannot even open it once it is gigabytes.
// logscan reads Postfix, Sendmail and Exim logs and mamori's own JSON log
// (format detected per file from its first lines) at disk speed, so the
// same tool serves them all.
//
// How memory stays independent of file size: files are streamed (gzip by
// magic bytes), one reader goroutine cuts them into chunks of whole lines,
// GOMAXPROCS workers turn each line into a typed Event with a pure parser
// (ParsePostfix, ParseSendmail, ParseExim, ParseMamori), and one aggregator consumes the chunks in
// order. Only three things are kept: counters per distinct key (sender,
// client IP, user, hour), a small fixed ring of per-minute buckets per key
// for burst detection, and the join table of queue ids that are still open.
// A queue id leaves that table when its message is removed (Postfix
// "removed", Exim "Completed") or all its recipients are final (mamori);
// Sendmail logs no end of a message, so its queue ids leave only by the
// cap. The counters per key are capped too (Options.MaxKeys per table):
// past it, new keys share one Overflow row, so a log of unique return
// paths (VERP, SRS) or rotating IPv6 clients cannot grow memory with its
// size. The join table is capped (Options.MaxOpen), oldest
// first. Files are processed oldest first (maillog.2.gz, maillog.1,
// maillog) through one aggregator, so a queue id that spans a rotation
// still joins up.
//
// How it stays fast: the parsers' events point into the chunk they came
// from (no string per field), and the aggregator copies only the keys it
// keeps; chunks and event slices are then recycled, so a scan of any size
// runs on the same few megabytes. bench/logscan.sh measures it against
// pflogsumm (docs/benchmarks.md).
//
// Counting rule: a message counts once per queue id; a recipient once per
// distinct recipient that was delivered or attempted (a deferral followed
// by a delivery is one recipient, one deferral). A message a content
// filter on the loopback interface hands back under a second queue id
// ("queued as X" from a 127.0.0.1 relay, as amavis does) counts once, at
// its first hop: the copy is taken back if it was counted already, and its
// deliveries count for the first hop's client.
//
// Findings (detect.go, patterns.go) are raised by fixed thresholds per
// window (Thresholds), each with a bounded state per subject: worm bursts,
// relay-denied storms, %-hacks, brute-force AUTH, mail relayed from outside
// to outside (local domains learned from local deliveries, or given),
// backscatter floods per local domain, rotating IPs per sender or HELO,
// and a sender's hour against its own hourly average. Follow (follow.go)
// feeds the same aggregator from a live file, like tail -F, and passes
// each new finding on as it appears.
package logscan
