"""The console's page handlers: `base` (the session, XSRF, security headers, HTML error pages),
`login` (scanning in and out), `home` (首页)."""
