package mailbox

import "time"

// Stale returns the users that have not logged in for at least age: their
// last login (or, never having logged in, their creation) is older than
// now-age. Disabled accounts are included so a report shows them too.
func Stale(users []User, age time.Duration, now time.Time) []User {
	var out []User
	cut := now.Add(-age)
	for _, u := range users {
		last := u.LastLogin
		if last.IsZero() {
			last = u.Created
		}
		if last.Before(cut) {
			out = append(out, u)
		}
	}
	return out
}
