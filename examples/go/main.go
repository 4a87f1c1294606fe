// Command producer publishes sluice jobs from Go with franz-go.
//
//	go run . -bootstrap HOST:PORT [-topic sluice.jobs] [-jobs N] [-prefix ID]
//	         [-campaign C] [-domains example.com,Bücher.example,...]
//
// It publishes N jobs, one recipient each (u<i>@<domain>, the domains taken
// in turn), as sluice.v1.Job records keyed by the recipient domain in
// lower-case A-label form. franz-go's key partitioner hashes keys with
// Kafka's murmur2, as Java's default partitioner and libsluice do, so a
// domain lands on the partition libsluice would choose. A job counts as
// accepted only when its produce promise reports no error. It prints one
// line per accepted job ("JOB_ID PARTITION DOMAIN") and exits 0 only if
// every job was accepted.
//
// The package sluicepb is generated from proto/ with protoc and
// protoc-gen-go (see docs/producing.md).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/net/idna"
	"google.golang.org/protobuf/proto"

	"sluiceexample/sluicepb"
)

const raw = "From: Shop <orders@example.net>\r\n" +
	"To: %s\r\n" +
	"Subject: Your order %s\r\n" +
	"\r\n" +
	"Thank you for your order.\r\n"

// domainOf returns the recipient's domain as sluice keys it: lower-case
// A-label (IDNA 2008, UTS #46 mapping: Bücher.Example -> xn--bcher-kva.example).
func domainOf(address string) (string, error) {
	at := strings.LastIndexByte(address, '@')
	if at < 0 {
		return "", fmt.Errorf("%q: no domain", address)
	}
	d, err := idna.Lookup.ToASCII(address[at+1:])
	if err != nil {
		return "", fmt.Errorf("%q: %v", address, err)
	}
	return strings.ToLower(d), nil
}

func makeJob(jobID, recipient, campaign string) (*sluicepb.Job, error) {
	domain, err := domainOf(recipient)
	if err != nil {
		return nil, err
	}
	rcpt := recipient[:strings.LastIndexByte(recipient, '@')] + "@" + domain
	return &sluicepb.Job{
		Version:     1,
		JobId:       jobID,
		Tenant:      "shop",
		Campaign:    campaign,
		Priority:    sluicepb.Priority_PRIORITY_BULK,
		MailFrom:    "bounces@example.net",
		Recipients:  []string{rcpt},
		Domain:      domain,
		Raw:         []byte(fmt.Sprintf(raw, rcpt, jobID)),
		CreatedAtMs: time.Now().UnixMilli(),
	}, nil
}

func main() {
	bootstrap := flag.String("bootstrap", "", "Kafka bootstrap servers, comma-separated")
	topic := flag.String("topic", "sluice.jobs", "the jobs topic")
	jobs := flag.Int("jobs", 10, "how many jobs")
	prefix := flag.String("prefix", "go", "job id prefix")
	campaign := flag.String("campaign", "go-example", "campaign")
	domains := flag.String("domains", "example.com", "recipient domains, comma-separated")
	flag.Parse()
	if *bootstrap == "" {
		fmt.Fprintln(os.Stderr, "producer: -bootstrap is required")
		os.Exit(2)
	}

	cl, err := kgo.NewClient(
		kgo.SeedBrokers(strings.Split(*bootstrap, ",")...),
		kgo.DefaultProduceTopic(*topic),
		kgo.RequiredAcks(kgo.AllISRAcks()), // acks=all; idempotence is on by default
		// nil hasher: Kafka's murmur2, exactly as Java's default partitioner.
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
		kgo.ProducerBatchMaxBytes(1130496), // sluice's size budget (1 MiB jobs)
	)
	if err != nil {
		fmt.Fprintln(os.Stderr, "producer:", err)
		os.Exit(2)
	}
	defer cl.Close()

	var (
		mu       sync.Mutex
		accepted []*kgo.Record
		failed   []error
	)
	ctx := context.Background()
	doms := strings.Split(*domains, ",")
	for i := 0; i < *jobs; i++ {
		job, err := makeJob(fmt.Sprintf("%s-%06d", *prefix, i),
			fmt.Sprintf("u%d@%s", i, doms[i%len(doms)]), *campaign)
		if err != nil {
			fmt.Fprintln(os.Stderr, "producer: refused:", err)
			os.Exit(2)
		}
		value, err := proto.Marshal(job)
		if err != nil {
			fmt.Fprintln(os.Stderr, "producer:", err)
			os.Exit(2)
		}
		rec := &kgo.Record{Key: []byte(job.Domain), Value: value}
		// The promise is the only place a job may be called accepted.
		cl.Produce(ctx, rec, func(r *kgo.Record, err error) {
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed = append(failed, err)
			} else {
				accepted = append(accepted, r)
			}
		})
	}
	flushCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := cl.Flush(flushCtx); err != nil {
		fmt.Fprintln(os.Stderr, "producer: flush:", err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, r := range accepted {
		var job sluicepb.Job
		if err := proto.Unmarshal(r.Value, &job); err == nil {
			fmt.Println(job.JobId, r.Partition, job.Domain)
		}
	}
	if len(failed) > 0 || len(accepted) != *jobs {
		fmt.Fprintf(os.Stderr, "producer: %d of %d jobs not accepted: %v\n",
			*jobs-len(accepted), *jobs, failed)
		os.Exit(1)
	}
}
