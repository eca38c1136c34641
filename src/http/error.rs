//! `HttpError`: why a request was refused, as a `Copy` value with a static message and the
//! status code the server should answer with. Nothing here allocates, so parsers can return
//! errors from hot loops and callers can build the error response from the value alone.

use std::fmt;

/// A request that cannot be served as sent. `status()` is the response code to send (after
/// which the connection is closed); `message()` is a short human-readable reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HttpError {
    /// The request line is not `method SP request-target SP HTTP-version`.
    RequestLine,
    /// The method contains a character that is not a token character.
    Method,
    /// The request-target has a character outside the URI set (see `head`), a `%` without
    /// two hex digits, or an invalid form.
    Target,
    /// The version is not of the form `HTTP/d.d`.
    VersionSyntax,
    /// A line ends with LF alone instead of CRLF.
    BareLf,
    /// A CR that is not followed by LF.
    BareCr,
    /// A header (or trailer) line has no colon or an invalid field name.
    HeaderName,
    /// Whitespace between a field name and its colon.
    SpaceBeforeColon,
    /// A field value contains NUL or another control character.
    HeaderValue,
    /// A header line starts with whitespace (obsolete line folding).
    ObsFold,
    /// An HTTP/1.1 request without a `Host` header.
    MissingHost,
    /// More than one `Host` header, or a `Host` value that is not a single host.
    BadHost,
    /// Both `Content-Length` and `Transfer-Encoding`.
    LengthAndChunked,
    /// A `Content-Length` value that is not `1*DIGIT`, or too large.
    ContentLength,
    /// `Content-Length` values that differ.
    ContentLengthMismatch,
    /// `Transfer-Encoding` in an HTTP/1.0 request.
    TransferEncodingHttp10,
    /// A malformed `Transfer-Encoding` list (empty element, parameters on `chunked`).
    TransferEncoding,
    /// `Transfer-Encoding` whose final coding is not `chunked`, or that repeats `chunked`.
    ChunkedNotFinal,
    /// A chunk-size line that is not `1*HEXDIG [chunk-ext] CRLF`, or a size that overflows.
    ChunkSize,
    /// A malformed chunk extension.
    ChunkExtension,
    /// Chunk extensions longer than the decoder's limit.
    ChunkExtensionTooLong,
    /// Chunk data not followed by exactly CRLF.
    ChunkDataEnd,
    /// The request-target is longer than the limit.
    TargetTooLong,
    /// The header section is larger than the limit.
    HeadTooLarge,
    /// More header fields than the limit.
    TooManyHeaders,
    /// The trailer section is larger than the limit.
    TrailerTooLarge,
    /// The body is larger than the limit (detected by callers).
    BodyTooLarge,
    /// A transfer coding other than `chunked`.
    UnsupportedTransferCoding,
    /// A `CONNECT` request: this server is not a proxy.
    ConnectUnsupported,
    /// A well-formed version other than HTTP/1.0 and HTTP/1.1.
    VersionNotSupported,
    /// An `Expect` header (HTTP/1.1) with an expectation other than `100-continue`.
    ExpectationFailed,
}

impl HttpError {
    /// A short explanation, suitable for the body of the error response.
    pub fn message(self) -> &'static str {
        use HttpError::*;
        match self {
            RequestLine => "Malformed request line",
            Method => "Invalid character in method",
            Target => "Invalid request target",
            VersionSyntax => "Malformed HTTP version",
            BareLf => "Line ends with LF without CR",
            BareCr => "CR not followed by LF",
            HeaderName => "Malformed header field name",
            SpaceBeforeColon => "Whitespace between header field name and colon",
            HeaderValue => "Control character in header field value",
            ObsFold => "Obsolete line folding in header section",
            MissingHost => "Missing Host header",
            BadHost => "Multiple or invalid Host header",
            LengthAndChunked => "Both Content-Length and Transfer-Encoding present",
            ContentLength => "Invalid Content-Length",
            ContentLengthMismatch => "Conflicting Content-Length values",
            TransferEncodingHttp10 => "Transfer-Encoding in HTTP/1.0 request",
            TransferEncoding => "Malformed Transfer-Encoding",
            ChunkedNotFinal => "Transfer-Encoding must end with a single chunked",
            ChunkSize => "Invalid chunk size",
            ChunkExtension => "Invalid chunk extension",
            ChunkExtensionTooLong => "Chunk extensions too long",
            ChunkDataEnd => "Chunk data not followed by CRLF",
            TargetTooLong => "Request target too long",
            HeadTooLarge => "Request header section too large",
            TooManyHeaders => "Too many header fields",
            TrailerTooLarge => "Trailer section too large",
            BodyTooLarge => "Request body too large",
            UnsupportedTransferCoding => "Unsupported transfer coding",
            ConnectUnsupported => "CONNECT is not supported",
            VersionNotSupported => "HTTP version not supported",
            ExpectationFailed => "Unsupported expectation (only 100-continue is supported)",
        }
    }

    /// The response status code this error calls for.
    pub fn status(self) -> u16 {
        use HttpError::*;
        match self {
            TargetTooLong => 414,
            HeadTooLarge | TooManyHeaders | TrailerTooLarge => 431,
            BodyTooLarge => 413,
            UnsupportedTransferCoding | ConnectUnsupported => 501,
            VersionNotSupported => 505,
            ExpectationFailed => 417,
            _ => 400,
        }
    }

    /// The reason phrase that goes with `status()`.
    pub fn reason(self) -> &'static str {
        match self.status() {
            413 => "Content Too Large",
            414 => "URI Too Long",
            431 => "Request Header Fields Too Large",
            501 => "Not Implemented",
            417 => "Expectation Failed",
            505 => "HTTP Version Not Supported",
            _ => "Bad Request",
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for HttpError {}

#[cfg(test)]
mod tests {
    use super::HttpError::{self, *};

    #[test]
    fn status_hints() {
        let rows: &[(HttpError, u16, &str)] = &[
            (BareLf, 400, "Bad Request"),
            (ContentLengthMismatch, 400, "Bad Request"),
            (ChunkedNotFinal, 400, "Bad Request"),
            (TargetTooLong, 414, "URI Too Long"),
            (HeadTooLarge, 431, "Request Header Fields Too Large"),
            (TooManyHeaders, 431, "Request Header Fields Too Large"),
            (BodyTooLarge, 413, "Content Too Large"),
            (UnsupportedTransferCoding, 501, "Not Implemented"),
            (VersionNotSupported, 505, "HTTP Version Not Supported"),
            (ExpectationFailed, 417, "Expectation Failed"),
        ];
        for &(e, status, reason) in rows {
            assert_eq!((e.status(), e.reason()), (status, reason), "{e:?}");
            assert!(!e.message().is_empty());
            assert_eq!(e.to_string(), e.message());
        }
    }
}
