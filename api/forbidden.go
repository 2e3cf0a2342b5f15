package api

// forbidden is the 403 answer of a mutating route: a daemon started
// without --token has those routes disabled, and says so rather than ask
// for a token no one can give.
func forbidden(token string) map[string]string {
	if token == "" {
		return map[string]string{"error": "mutating endpoints are disabled: this serve was started without --token"}
	}
	return map[string]string{"error": "a valid bearer token is required (serve --token)"}
}
