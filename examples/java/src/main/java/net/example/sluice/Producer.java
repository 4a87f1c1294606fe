package net.example.sluice;

import com.google.protobuf.ByteString;
import java.net.IDN;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Locale;
import java.util.Properties;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.serialization.StringSerializer;
import sluice.v1.Common.Priority;
import sluice.v1.JobOuterClass.Job;

/**
 * Publishes sluice jobs from Java with kafka-clients.
 *
 * <pre>
 * java -cp ... net.example.sluice.Producer -bootstrap HOST:PORT [-topic sluice.jobs]
 *     [-jobs N] [-prefix ID] [-campaign C] [-domains example.com,Bücher.example,...]
 * </pre>
 *
 * Publishes N jobs, one recipient each (u&lt;i&gt;@&lt;domain&gt;, the domains taken in
 * turn), as sluice.v1.Job records keyed by the recipient domain in lower-case
 * A-label form. Kafka's default partitioner hashes the key with murmur2, which
 * is what libsluice does, so a domain lands on the partition libsluice would
 * choose. A job counts as accepted only when its send callback reports no
 * exception. Prints one line per accepted job ("JOB_ID PARTITION DOMAIN") and
 * exits 0 only if every job was accepted.
 */
public final class Producer {
    private static final String RAW = "From: Shop <orders@example.net>\r\n"
            + "To: %s\r\n"
            + "Subject: Your order %s\r\n"
            + "\r\n"
            + "Thank you for your order.\r\n";

    /** The recipient's domain as sluice keys it: lower-case A-label. */
    static String domainOf(String address) {
        String domain = address.substring(address.lastIndexOf('@') + 1);
        return IDN.toASCII(domain, IDN.USE_STD3_ASCII_RULES).toLowerCase(Locale.ROOT);
    }

    static Job makeJob(String jobId, String recipient, String campaign) {
        String domain = domainOf(recipient);
        String rcpt = recipient.substring(0, recipient.lastIndexOf('@')) + "@" + domain;
        return Job.newBuilder()
                .setVersion(1)
                .setJobId(jobId)
                .setTenant("shop")
                .setCampaign(campaign)
                .setPriority(Priority.PRIORITY_BULK)
                .setMailFrom("bounces@example.net")
                .addRecipients(rcpt)
                .setDomain(domain)
                .setRaw(ByteString.copyFrom(String.format(RAW, rcpt, jobId), StandardCharsets.UTF_8))
                .setCreatedAtMs(System.currentTimeMillis())
                .build();
    }

    public static void main(String[] args) throws Exception {
        String bootstrap = null, topic = "sluice.jobs", prefix = "java", campaign = "java-example";
        String domains = "example.com";
        int jobs = 10;
        for (int i = 0; i + 1 < args.length; i += 2) {
            switch (args[i]) {
                case "-bootstrap" -> bootstrap = args[i + 1];
                case "-topic" -> topic = args[i + 1];
                case "-jobs" -> jobs = Integer.parseInt(args[i + 1]);
                case "-prefix" -> prefix = args[i + 1];
                case "-campaign" -> campaign = args[i + 1];
                case "-domains" -> domains = args[i + 1];
                default -> {
                    System.err.println("producer: unknown option " + args[i]);
                    System.exit(2);
                }
            }
        }
        if (bootstrap == null) {
            System.err.println("producer: -bootstrap is required");
            System.exit(2);
        }

        // The client's warnings and errors on stderr, not its INFO chatter.
        if (System.getProperty("org.slf4j.simpleLogger.defaultLogLevel") == null) {
            System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn");
        }
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, true); // retries never duplicate
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.MAX_REQUEST_SIZE_CONFIG, 1130496); // sluice's size budget
        // No partitioner.class: the default one hashes keys with murmur2.
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());

        List<String> accepted = Collections.synchronizedList(new ArrayList<>());
        List<Exception> failed = Collections.synchronizedList(new ArrayList<>());
        String[] doms = domains.split(",");
        try (KafkaProducer<String, byte[]> producer = new KafkaProducer<>(p)) {
            for (int i = 0; i < jobs; i++) {
                Job job = makeJob(String.format("%s-%06d", prefix, i),
                        "u" + i + "@" + doms[i % doms.length], campaign);
                // The callback is the only place a job may be called accepted.
                producer.send(new ProducerRecord<>(topic, job.getDomain(), job.toByteArray()),
                        (RecordMetadata md, Exception e) -> {
                            if (e != null) {
                                failed.add(e);
                            } else {
                                accepted.add(job.getJobId() + " " + md.partition() + " "
                                        + job.getDomain());
                            }
                        });
            }
            producer.flush();
        }
        accepted.forEach(System.out::println);
        if (!failed.isEmpty() || accepted.size() != jobs) {
            System.err.printf("producer: %d of %d jobs not accepted: %s%n",
                    jobs - accepted.size(), jobs, failed);
            System.exit(1);
        }
    }
}
