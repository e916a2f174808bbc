package logscan

import (
	"slices"
	"strings"
	"time"
)

// This file holds the detectors added after the first slice: backscatter
// floods, rotating IPs sharing one sender or HELO, mail relayed from
// outside to outside, and a sender's sudden change against its own
// history. Like the others they keep a bounded state per subject and raise
// at most one finding per (kind, subject), whose evidence then grows.

// windowed counts one event of subject in r at time t and returns its
// finding once the count within the window reaches threshold (nil before);
// add is called with the finding and the window's count to extend the
// evidence. The finding turns high at highAt events per window.
func (d *detectors) windowed(kind, subject, typ string, r *ring, t int64, threshold, highAt int, add func(f *Finding, n int, first bool)) *Finding {
	n := r.add(t, 1)
	f := live(d.found[fkey{kind, subject}])
	if f == nil && n < threshold {
		return nil
	}
	first := f == nil
	if first {
		f = d.finding(kind, subject, typ, t)
		f.Evidence.First = time.Unix(t-int64(d.th.Window/time.Second), 0).UTC()
	} else {
		f.Evidence.Last = time.Unix(t, 0).UTC()
	}
	add(f, n, first)
	f.Evidence.Peak = max(f.Evidence.Peak, n)
	if n >= highAt {
		f.Severity = "high"
	}
	return f
}

// backscatter counts a bounce (a recipient of an inbound null-sender
// message, or a null-sender RCPT refused) for the local domain of to.
func (d *detectors) backscatter(t int64, domain, to string, reject bool) {
	r := d.ringOf(d.bounces, domain)
	if r == nil {
		return
	}
	d.windowed(KindBackscatter, domain, "domain", r, t, d.th.Backscatter, 5*d.th.Backscatter, func(f *Finding, n int, first bool) {
		switch {
		case first:
			f.Evidence.Recipients = n
		default:
			f.Evidence.Recipients++
		}
		if reject {
			f.Evidence.Rejects++
		}
		f.Evidence.SampleRecipients = sample(f.Evidence.SampleRecipients, to)
	})
}

// relayed counts a recipient of a foreign domain, from a sender of a
// foreign domain, that an unauthenticated public client got relayed out.
func (d *detectors) relayed(t int64, client, from, to, subject string) {
	r := d.ringOf(d.relayOut, client)
	if r == nil {
		return
	}
	d.windowed(KindRelayOut, client, "ip", r, t, d.th.RelayOut, 10*d.th.RelayOut, func(f *Finding, n int, first bool) {
		f.Severity = "high" // an open relay is never medium
		if first {
			f.Evidence.Recipients = n
		} else {
			f.Evidence.Recipients++
		}
		f.Evidence.SampleRecipients = sample(f.Evidence.SampleRecipients, to)
		f.Evidence.SampleSenders = sample(f.Evidence.SampleSenders, from)
		f.Evidence.SampleSubjects = sample(f.Evidence.SampleSubjects, subject)
	})
}

// rotating notes that ip sent (or tried to send) as sender, or said helo,
// at time t; many distinct IPs within the window make a finding.
func (d *detectors) rotating(t int64, w *ipWindow, subject, typ, ip string) {
	if w == nil || ip == "" {
		return
	}
	if len(w.ips) == 1 && w.ips[0].ip == ip && w.f == nil {
		w.ips[0].t = max(w.ips[0].t, t) // the usual case: one sender, one IP
		return
	}
	n := w.add(ip, t, int64(d.th.Window/time.Second), 2*d.th.RotatingIPs)
	f := live(w.f)
	if f == nil && n < d.th.RotatingIPs {
		return
	}
	if f == nil {
		f = d.finding(KindRotating, subject, typ, t)
		w.f = f
		f.Evidence.First = time.Unix(w.ips[0].t, 0).UTC()
		for _, x := range w.ips {
			f.Evidence.SampleIPs = sample(f.Evidence.SampleIPs, x.ip)
		}
	}
	f.Evidence.Last = time.Unix(t, 0).UTC()
	f.Evidence.Messages++
	f.Evidence.DistinctIPs = max(f.Evidence.DistinctIPs, n)
	f.Evidence.Peak = f.Evidence.DistinctIPs
	f.Evidence.SampleIPs = sample(f.Evidence.SampleIPs, ip)
	if n >= 2*d.th.RotatingIPs {
		f.Severity = "high"
	}
}

// helo returns the IP window of a HELO name (nil: none, or too many).
func (d *detectors) helo(name string) *ipWindow {
	if name == "" {
		return nil
	}
	w := d.helos[name]
	if w == nil {
		if len(d.helos) >= d.maxKeys {
			return nil
		}
		w = &ipWindow{}
		d.helos[strings.Clone(name)] = w
	}
	return w
}

// rate counts a message of sender in its clock hour and compares the
// hour with the sender's average per hour before it.
func (d *detectors) rate(t int64, b *burst, sender string) {
	if b == nil || t == 0 {
		return
	}
	h := &b.hours
	hour := t - t%3600
	switch {
	case h.first == 0:
		h.first, h.cur = hour, hour
	case hour > h.cur:
		h.before += h.n
		h.n, h.cur = 0, hour
	}
	h.n++
	span := int((h.cur - h.first) / 3600)
	if hour != h.cur || span < 3 || h.n < d.th.RateMin || h.n*span < d.th.RateFactor*h.before {
		return
	}
	f := live(h.f)
	if f == nil {
		f = d.finding(KindRateChange, sender, "address", t)
		h.f = f
		f.Evidence.Window = time.Hour.String()
	}
	if h.n > f.Evidence.Messages { // the worst hour is the evidence
		f.Evidence.First = time.Unix(hour, 0).UTC()
		f.Evidence.Messages, f.Evidence.Peak = h.n, h.n
		f.Evidence.BaselinePerHour = float64(h.before) / float64(span)
	}
	f.Evidence.Last = time.Unix(t, 0).UTC()
	if h.n*span >= 3*d.th.RateFactor*h.before {
		f.Severity = "high"
	}
}

// unmessage takes back a message counted by message and rate: the hop
// turned out to be a content filter's re-injection of one already counted.
func (d *detectors) unmessage(t int64, cb, fb *burst, nrcpt int) {
	for _, b := range [...]*burst{cb, fb} {
		if b == nil {
			continue
		}
		b.msgs.sub(t, 1)
		b.rcpts.sub(t, nrcpt)
		if t-t%3600 == b.hours.cur && b.hours.n > 0 {
			b.hours.n--
		}
	}
}

// subject adds a sample subject to the worm findings of a client and a
// sender.
func (d *detectors) subject(cb, fb *burst, s string) {
	for _, b := range [...]*burst{cb, fb} {
		if b == nil {
			continue
		}
		if f := live(b.worm); f != nil {
			f.Evidence.SampleSubjects = sample(f.Evidence.SampleSubjects, s)
		}
	}
}

// expire forgets the findings last extended before t (follow mode: the
// next episode of the same subject is a new finding, and memory stays
// bounded), and the detector state idle since then.
func (d *detectors) expire(t int64) {
	d.ordered = slices.DeleteFunc(d.ordered, func(f *Finding) bool {
		if f.Evidence.Last.Unix() >= t {
			return false
		}
		f.expired = true
		delete(d.found, fkey{f.Kind, f.Subject})
		return true
	})
	for _, m := range [...]map[string]*ring{d.relay, d.auth, d.bounces, d.relayOut} {
		for k, r := range m {
			if r.idleSince(t) {
				delete(m, k)
			}
		}
	}
	for k, w := range d.helos {
		if len(w.ips) == 0 || w.ips[len(w.ips)-1].t < t {
			delete(d.helos, k)
		}
	}
}

// idleSince reports whether nothing was counted at or after t.
func (r *ring) idleSince(t int64) bool {
	for _, b := range r.b {
		if b.n != 0 && b.minute >= t/60 {
			return false
		}
	}
	return true
}
