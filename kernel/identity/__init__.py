"""Identity and access control: sessions, 2FA, RBAC, teams, password reset,
autologin and partner OAuth2 clients (seed sections 1, 2, 17-19; ZT4 partner API)."""
