"""The built-in senders: DMP (XDS.b), MSSanté over SMTP, an MSSanté operator API, HL7 v2 over MLLP."""
