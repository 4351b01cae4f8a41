//! The collar's identity: a MAC address.
//!
//! Collars may write their MAC with `:` or `-` and in any case; tether
//! stores the six bytes and always prints them upper-case with `:`, so one
//! collar has one key however its firmware spells it.

use std::fmt;
use std::str::FromStr;

/// A 48-bit MAC address. Ordered by its bytes, so listings sort naturally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

/// The text was not six two-hex-digit groups with one kind of separator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadMac;

impl Mac {
    /// Parses `AA:BB:CC:DD:EE:FF` or `aa-bb-cc-dd-ee-ff`. Both separators
    /// are accepted, but one address uses only one of them.
    pub fn parse(text: &[u8]) -> Result<Mac, BadMac> {
        if text.len() != 17 {
            return Err(BadMac);
        }
        let separator = text[2];
        if separator != b':' && separator != b'-' {
            return Err(BadMac);
        }
        let mut bytes = [0u8; 6];
        for (i, byte) in bytes.iter_mut().enumerate() {
            let at = i * 3;
            if i > 0 && text[at - 1] != separator {
                return Err(BadMac);
            }
            *byte = hex(text[at])? << 4 | hex(text[at + 1])?;
        }
        Ok(Mac(bytes))
    }
}

fn hex(digit: u8) -> Result<u8, BadMac> {
    match digit {
        b'0'..=b'9' => Ok(digit - b'0'),
        b'a'..=b'f' => Ok(digit - b'a' + 10),
        b'A'..=b'F' => Ok(digit - b'A' + 10),
        _ => Err(BadMac),
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(std::str::from_utf8(&self.text()).map_err(|_| fmt::Error)?)
    }
}

impl Mac {
    /// The printed form, `CE:96:C2:78:27:FC`, without formatting machinery.
    pub fn text(&self) -> [u8; 17] {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        let mut out = [b':'; 17];
        for (i, byte) in self.0.iter().enumerate() {
            out[i * 3] = HEX[usize::from(byte >> 4)];
            out[i * 3 + 1] = HEX[usize::from(byte & 0xF)];
        }
        out
    }
}

impl serde::Serialize for Mac {
    /// As its printed form, `"CE:96:C2:78:27:FC"`.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = self.text();
        // Hex digits and colons only: always UTF-8.
        serializer.serialize_str(std::str::from_utf8(&text).unwrap_or_default())
    }
}

impl FromStr for Mac {
    type Err = BadMac;

    fn from_str(s: &str) -> Result<Mac, BadMac> {
        Mac::parse(s.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_both_separators_and_any_case() {
        let expected = Mac([0xCE, 0x96, 0xC2, 0x78, 0x27, 0xFC]);
        for text in ["CE:96:C2:78:27:FC", "ce:96:c2:78:27:fc", "cE-96-C2-78-27-fC"] {
            assert_eq!(Mac::parse(text.as_bytes()), Ok(expected), "{text}");
        }
    }

    #[test]
    fn prints_normalized() {
        let mac: Mac = "0a-1b-2c-3d-4e-5f".parse().unwrap();
        assert_eq!(mac.to_string(), "0A:1B:2C:3D:4E:5F");
    }

    #[test]
    fn rejects_everything_else() {
        for text in [
            "",
            "CE:96:C2:78:27",
            "CE:96:C2:78:27:FC:00",
            "CE:96:C2:78:27:F",
            "CE:96:C2:78:27:FCX",
            "CE:96-C2:78:27:FC",
            "CE.96.C2.78.27.FC",
            "CE:96:C2:78:27:FG",
            "CE::6:C2:78:27:FC",
            "CE96C27827FC",
            " CE:96:C2:78:27:F",
            "+E:96:C2:78:27:FC",
        ] {
            assert_eq!(Mac::parse(text.as_bytes()), Err(BadMac), "{text:?}");
        }
    }

    #[test]
    fn round_trips_every_byte_value() {
        for b in 0..=255u8 {
            let mac = Mac([b, 0, 255, b, 1, b]);
            assert_eq!(mac.to_string().parse::<Mac>(), Ok(mac));
        }
    }
}
