package abi

// IndexType implements MarshalText for JSON. vmihailenco/msgpack/v5 prefers
// a TextMarshaler to the integer kind, so without the two methods below a Go
// host or guest that uses that library would write a type as the string
// "legacy"/"ha" and fail to read the uint 8 this package writes. The
// library's Marshaler/Unmarshaler interfaces need no import, so abi stays
// dependency-free.

// MarshalMsgpack encodes t as a msgpack uint 8, as AppendHeader does.
func (t IndexType) MarshalMsgpack() ([]byte, error) { return []byte{mpUint8, byte(t)}, nil }

// UnmarshalMsgpack reads t from any msgpack integer form that fits a byte.
func (t *IndexType) UnmarshalMsgpack(b []byte) error {
	r := Reader{buf: b}
	v, err := r.Uint8()
	if err != nil {
		return err
	}
	if err := r.end("index type"); err != nil {
		return err
	}
	*t = IndexType(v)
	return nil
}
