//! Signed room tokens: `base64url(claims JSON) "." base64url(HMAC-SHA256)`.
//!
//! Link tokens (in `invite_url` / `host_url`) are deterministic for a room,
//! role and invite generation, so the same link comes back on every `GET`;
//! rotating the invite bumps the generation and so revokes every older link.
//! Session tokens are issued per participant at join time, carry a random
//! id (`jti`) and an expiry, and are revoked one by one.

use crate::ids::{ParticipantId, RoomId};
use crate::model::Role;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// How long a session token stays valid.
pub const SESSION_TTL_SECS: u64 = 24 * 3600;

/// Whether a token is a shareable link or one participant's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenKind {
    /// Shared link (`invite_url`, `host_url`).
    #[serde(rename = "l")]
    Link,
    /// One participant's credential, issued at join.
    #[serde(rename = "s")]
    Session,
}

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Room.
    #[serde(rename = "r")]
    pub room: RoomId,
    /// Role granted.
    #[serde(rename = "o")]
    pub role: Role,
    /// Link or session.
    #[serde(rename = "k")]
    pub kind: TokenKind,
    /// Invite generation (links of role guest).
    #[serde(rename = "g", default, skip_serializing_if = "is_zero")]
    pub generation: u32,
    /// Unique id, for revocation (sessions).
    #[serde(rename = "j", default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Participant (sessions).
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    pub participant: Option<ParticipantId>,
    /// Expiry, Unix seconds.
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token of ours at all.
    #[error("malformed token")]
    Malformed,
    /// Tampered with or signed by another server.
    #[error("invalid token signature")]
    BadSignature,
    /// Past its expiry.
    #[error("token expired")]
    Expired,
}

/// Signs and verifies tokens with the server secret.
#[derive(Clone)]
pub struct TokenSigner {
    key: Vec<u8>,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSigner(..)")
    }
}

impl TokenSigner {
    /// A signer over `secret` (at least 32 random bytes).
    pub fn new(secret: Vec<u8>) -> Self {
        Self { key: secret }
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
        match HmacSha256::new_from_slice(&self.key) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        }
    }

    /// Encodes and signs `claims`.
    pub fn sign(&self, claims: &Claims) -> String {
        // Serialising a struct of strings and integers cannot fail.
        let body = serde_json::to_vec(claims).unwrap_or_default();
        let body = B64.encode(body);
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        let sig = B64.encode(mac.finalize().into_bytes());
        format!("{body}.{sig}")
    }

    /// Checks signature and expiry (not revocation: that needs the store).
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        if token.len() > 2048 {
            return Err(TokenError::Malformed);
        }
        let (body, sig) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let sig = B64.decode(sig).map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        mac.verify_slice(&sig)
            .map_err(|_| TokenError::BadSignature)?;
        let json = B64.decode(body).map_err(|_| TokenError::Malformed)?;
        let claims: Claims = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
        if claims.expires_at.is_some_and(|e| e <= now) {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }

    /// The link token for `role` in `room` at invite generation `generation`,
    /// valid until `expires_at` (Unix seconds) when given.
    pub fn link(
        &self,
        room: &RoomId,
        role: Role,
        generation: u32,
        expires_at: Option<u64>,
    ) -> String {
        self.sign(&Claims {
            room: room.clone(),
            role,
            kind: TokenKind::Link,
            generation,
            jti: None,
            participant: None,
            expires_at,
        })
    }

    /// A fresh session token for a participant who just joined.
    pub fn session(
        &self,
        room: &RoomId,
        role: Role,
        pid: &ParticipantId,
        now: u64,
    ) -> (String, Claims) {
        let claims = Claims {
            room: room.clone(),
            role,
            kind: TokenKind::Session,
            generation: 0,
            jti: Some(crate::ids::random_string(16)),
            participant: Some(pid.clone()),
            expires_at: Some(now + SESSION_TTL_SECS),
        };
        (self.sign(&claims), claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> TokenSigner {
        TokenSigner::new(vec![7u8; 32])
    }

    #[test]
    fn link_tokens_are_deterministic_and_verify() {
        let s = signer();
        let room = RoomId::generate();
        let a = s.link(&room, Role::Guest, 3, None);
        assert_eq!(a, s.link(&room, Role::Guest, 3, None));
        let c = s.verify(&a, 0).unwrap();
        assert_eq!(c.room, room);
        assert_eq!(c.role, Role::Guest);
        assert_eq!(c.generation, 3);
        assert_ne!(a, s.link(&room, Role::Host, 3, None));
    }

    #[test]
    fn tampering_and_foreign_keys_are_caught() {
        let s = signer();
        let room = RoomId::generate();
        let t = s.link(&room, Role::Guest, 0, None);
        // Swap the claims for a host claim but keep the guest signature.
        let host = s.link(&room, Role::Host, 0, None);
        let forged = format!(
            "{}.{}",
            host.split_once('.').unwrap().0,
            t.split_once('.').unwrap().1
        );
        assert_eq!(s.verify(&forged, 0), Err(TokenError::BadSignature));
        assert_eq!(
            TokenSigner::new(vec![8u8; 32]).verify(&t, 0),
            Err(TokenError::BadSignature)
        );
        assert_eq!(s.verify("garbage", 0), Err(TokenError::Malformed));
        assert_eq!(s.verify("a.b.c", 0), Err(TokenError::Malformed));
    }

    #[test]
    fn links_can_expire() {
        let s = signer();
        let room = RoomId::generate();
        let t = s.link(&room, Role::Guest, 1, Some(500));
        assert!(s.verify(&t, 499).is_ok());
        assert_eq!(s.verify(&t, 500), Err(TokenError::Expired));
    }

    #[test]
    fn sessions_expire() {
        let s = signer();
        let room = RoomId::generate();
        let pid = ParticipantId::generate();
        let (t, claims) = s.session(&room, Role::Guest, &pid, 1000);
        assert_eq!(s.verify(&t, 1001).unwrap(), claims);
        assert_eq!(
            s.verify(&t, 1000 + SESSION_TTL_SECS),
            Err(TokenError::Expired)
        );
    }
}
