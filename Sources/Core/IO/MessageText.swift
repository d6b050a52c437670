// MessageText: quoting text taken from input files so that an error message stays one readable line.

enum MessageText {
    /// `text` in single quotes, escaped and shortened (see `excerpt`).
    static func quoted(_ text: String, limit: Int = 80) -> String {
        "'" + excerpt(text, limit: limit) + "'"
    }

    /// `text` with line breaks, control characters, quotes and backslashes escaped, cut after
    /// `limit` characters, since names and numbers in a damaged file can be arbitrary bytes.
    static func excerpt(_ text: String, limit: Int = 40) -> String {
        var result = ""
        var count = 0
        for scalar in text.unicodeScalars {
            if count == limit {
                result += "…"
                break
            }
            count += 1
            switch scalar {
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            case "'": result += "\\'"
            case "\\": result += "\\\\"
            default:
                let value = scalar.value
                if value < 0x20 || (0x7F...0x9F).contains(value) || value == 0x2028 || value == 0x2029 {
                    result += "\\u{" + String(value, radix: 16) + "}"
                } else {
                    result.unicodeScalars.append(scalar)
                }
            }
        }
        return result
    }
}
