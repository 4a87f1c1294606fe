module sluiceexample

go 1.19

require (
	github.com/twmb/franz-go v1.16.1
	golang.org/x/net v0.17.0
	google.golang.org/protobuf v1.33.0
)

require (
	github.com/klauspost/compress v1.17.4 // indirect
	github.com/pierrec/lz4/v4 v4.1.19 // indirect
	github.com/twmb/franz-go/pkg/kmsg v1.7.0 // indirect
	golang.org/x/text v0.13.0 // indirect
)
