// The Kafka Streams job of the reference pipeline (the product specification's "reference
// pipeline", PRODUCT.md): views per page in 1-minute tumbling event-time windows into the
// page-view-counts topic, and an alert record whenever a window's count exceeds 1,000,
// exactly-once. The ingest benchmark runs it side by side with clickflow over the same topic.
//
// Usage: ReferenceJob BOOTSTRAP INPUT COUNTS ALERTS APPLICATION_ID STATE_DIR THREADS
//
// It reads INPUT from the earliest offsets and prints, on stdout:
//   "running"       when Kafka Streams first reaches the RUNNING state (its threads have
//                   their partitions);
//   "first record"  when its first record is read;
//   "caught up"     if the input topic held records when it started (a filled topic), once
//                   its committed offsets have reached the end of the input topic as it was and
//                   of its repartition topic, which no transaction holds open any more:
//                   with exactly-once, the output of every record is committed with them.
//                   (Committed offsets, unlike counts of the records seen, are not fooled by
//                   records that a rebalance made a thread process again.)
// A record that is not a JSON object with a string user_id and page and a timestamp (epoch
// milliseconds, or ISO-8601 with or without an offset) is counted as read and skipped, and
// so is one more than an hour ahead of the wall clock: the broker refuses to store records
// that far ahead (log.message.timestamp.after.max.ms), so the repartition topic could not
// take it, and the job would stop.
//
// It exits with status 1, saying why on stderr, when Kafka Streams stops with an error or a
// request to the cluster fails.
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.time.Duration;
import java.time.LocalDateTime;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.time.format.DateTimeParseException;
import java.time.temporal.TemporalAccessor;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicBoolean;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.ListOffsetsOptions;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.IsolationLevel;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.Repartitioned;
import org.apache.kafka.streams.kstream.TimeWindows;
import org.apache.kafka.streams.kstream.Windowed;
import org.apache.kafka.streams.processor.TimestampExtractor;

public class ReferenceJob {
    static final Duration WINDOW = Duration.ofMinutes(1);
    /** As long as clickflow's default retention: a window takes late events for a day. */
    static final Duration GRACE = Duration.ofHours(24);
    static final long ALERT_THRESHOLD = 1_000;
    /** The broker's default log.message.timestamp.after.max.ms. */
    static final long MAX_AHEAD_MS = Duration.ofHours(1).toMillis();
    static final ObjectMapper JSON = new ObjectMapper();
    /** The name of the repartition step, which names its topic. */
    static final String BY_PAGE = "by-page";
    /** How often the committed offsets are read once the job runs. */
    static final long POLL_MS = 25;

    /** A parsed page view; INVALID stands for a record that is not one. */
    record PageView(String userId, String page, long timestamp) {
        static final PageView INVALID = new PageView(null, null, -1);
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 7) {
            System.err.println(
                "usage: ReferenceJob BOOTSTRAP INPUT COUNTS ALERTS APPLICATION_ID STATE_DIR THREADS");
            System.exit(2);
        }
        String input = args[1], counts = args[2], alerts = args[3], application = args[4];
        Properties config = new Properties();
        config.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        config.put(StreamsConfig.APPLICATION_ID_CONFIG, application);
        config.put(StreamsConfig.STATE_DIR_CONFIG, args[5]);
        config.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, Integer.parseInt(args[6]));
        config.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        config.put(StreamsConfig.consumerPrefix("auto.offset.reset"), "earliest");
        config.put(StreamsConfig.producerPrefix("compression.type"), "zstd");

        AtomicBoolean read = new AtomicBoolean();
        StreamsBuilder builder = new StreamsBuilder();
        KStream<String, PageView> views = builder
            .stream(input, Consumed.with(Serdes.String(), pageViewSerde())
                .withTimestampExtractor(new EventTime()))
            .peek((key, view) -> read.set(true))
            .filter((key, view) -> view != PageView.INVALID);
        KStream<Windowed<String>, Long> windowCounts = views
            .map((key, view) -> KeyValue.pair(view.page(), view.userId()))
            .repartition(Repartitioned.with(Serdes.String(), Serdes.String()).withName(BY_PAGE))
            .groupByKey(Grouped.with(Serdes.String(), Serdes.String()))
            .windowedBy(TimeWindows.ofSizeAndGrace(WINDOW, GRACE))
            .count()
            .toStream();
        windowCounts
            .map((window, count) -> KeyValue.pair(window.key(), countValue(window, count)))
            .to(counts, Produced.with(Serdes.String(), Serdes.String()));
        windowCounts
            .filter((window, count) -> count != null && count > ALERT_THRESHOLD)
            .map((window, count) -> KeyValue.pair(window.key(), alertValue(window, count)))
            .to(alerts, Produced.with(Serdes.String(), Serdes.String()));

        KafkaStreams streams = new KafkaStreams(builder.build(), config);
        AtomicBoolean running = new AtomicBoolean();
        streams.setStateListener((state, before) -> {
            if (state == KafkaStreams.State.RUNNING && !running.getAndSet(true)) {
                System.out.println("running");
                System.out.flush();
            }
        });
        Runtime.getRuntime().addShutdownHook(new Thread(() -> streams.close(Duration.ofSeconds(10))));
        Properties adminConfig = new Properties();
        adminConfig.put("bootstrap.servers", args[0]);
        try (Admin admin = Admin.create(adminConfig)) {
            Map<TopicPartition, Long> inputEnds =
                ends(admin, partitions(admin, input), IsolationLevel.READ_UNCOMMITTED);
            streams.start();
            while (!read.get()) waitWhileRunning(streams, 1);
            System.out.println("first record");
            if (inputEnds.values().stream().anyMatch(end -> end > 0)) {
                while (!committedPast(admin, application, inputEnds, 0)) waitWhileRunning(streams, POLL_MS);
                // Every repartition record is written and committed by now.
                List<TopicPartition> repartition =
                    partitions(admin, application + "-" + BY_PAGE + "-repartition");
                while (!repartitionCommitted(admin, application, repartition)) {
                    waitWhileRunning(streams, POLL_MS);
                }
                System.out.println("caught up");
            }
            System.out.flush();
        } catch (Exception error) {
            error.printStackTrace();
            System.exit(1);
        }
        while (true) waitWhileRunning(streams, 100);
    }

    /** Sleeps `ms` milliseconds; exits with status 1 if Kafka Streams has stopped. */
    static void waitWhileRunning(KafkaStreams streams, long ms) throws InterruptedException {
        KafkaStreams.State state = streams.state();
        if (state == KafkaStreams.State.ERROR || state == KafkaStreams.State.PENDING_ERROR
                || state == KafkaStreams.State.NOT_RUNNING) {
            System.err.println("ReferenceJob: Kafka Streams stopped (" + state + ")");
            System.exit(1);
        }
        Thread.sleep(ms);
    }

    /**
     * Whether `group` has committed the whole repartition topic, which no transaction holds
     * open. The topic is written in transactions: it ends with a commit marker, which the
     * committed offset may stop before.
     */
    static boolean repartitionCommitted(Admin admin, String group, List<TopicPartition> repartition)
            throws Exception {
        Map<TopicPartition, Long> written = ends(admin, repartition, IsolationLevel.READ_UNCOMMITTED);
        boolean noneOpen = written.equals(ends(admin, repartition, IsolationLevel.READ_COMMITTED));
        return noneOpen && committedPast(admin, group, written, 1);
    }

    /**
     * Whether `group`'s committed offsets are at most `markers` before the end of each
     * non-empty partition of `ends`.
     */
    static boolean committedPast(
            Admin admin, String group, Map<TopicPartition, Long> ends, long markers) throws Exception {
        Map<TopicPartition, OffsetAndMetadata> committed =
            admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get();
        return reached(committed, ends, markers);
    }

    /** Whether `committed` is at most `markers` before each non-empty partition's end. */
    static boolean reached(
            Map<TopicPartition, OffsetAndMetadata> committed, Map<TopicPartition, Long> ends, long markers) {
        return ends.entrySet().stream().allMatch(end -> {
            OffsetAndMetadata offset = committed.get(end.getKey());
            return end.getValue() == 0 || (offset != null && offset.offset() >= end.getValue() - markers);
        });
    }

    /** The partitions of `topic`. */
    static List<TopicPartition> partitions(Admin admin, String topic) throws Exception {
        List<TopicPartition> partitions = new ArrayList<>();
        for (TopicPartitionInfo partition :
                admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic).partitions()) {
            partitions.add(new TopicPartition(topic, partition.partition()));
        }
        return partitions;
    }

    /** The end offset of each of `partitions`, as a consumer with `isolation` sees it. */
    static Map<TopicPartition, Long> ends(
            Admin admin, List<TopicPartition> partitions, IsolationLevel isolation) throws Exception {
        Map<TopicPartition, OffsetSpec> latest = new HashMap<>();
        for (TopicPartition partition : partitions) latest.put(partition, OffsetSpec.latest());
        Map<TopicPartition, Long> ends = new HashMap<>();
        admin.listOffsets(latest, new ListOffsetsOptions(isolation)).all().get()
            .forEach((partition, end) -> ends.put(partition, end.offset()));
        return ends;
    }

    /**
     * A page-view-counts value: clickflow's fields without unique_users; the window bounds
     * as Instant writes them (no milliseconds when they are zero).
     */
    static String countValue(Windowed<String> window, long count) {
        return "{" + windowFields(window, count) + "}";
    }

    /** An alerts value, with the fields of the spec's alert records that the job knows. */
    static String alertValue(Windowed<String> window, long count) {
        return "{\"alert\":\"high_traffic\"," + windowFields(window, count) + "}";
    }

    static String windowFields(Windowed<String> window, long count) {
        return String.format(
            "\"page\":%s,\"count\":%d,\"window_start\":\"%s\",\"window_end\":\"%s\"",
            quoted(window.key()), count, window.window().startTime(), window.window().endTime());
    }

    static String quoted(String text) {
        try {
            return JSON.writeValueAsString(text);
        } catch (Exception error) {
            throw new IllegalStateException(error);
        }
    }

    static Serde<PageView> pageViewSerde() {
        Serializer<PageView> serializer = (topic, view) -> {
            throw new UnsupportedOperationException("page views are only read");
        };
        Deserializer<PageView> deserializer = (topic, bytes) -> parse(bytes);
        return Serdes.serdeFrom(serializer, deserializer);
    }

    static PageView parse(byte[] bytes) {
        try {
            JsonNode event = JSON.readTree(bytes);
            JsonNode user = event.get("user_id"), page = event.get("page");
            if (user == null || !user.isTextual() || user.asText().isEmpty()
                || page == null || !page.isTextual() || page.asText().isEmpty()) {
                return PageView.INVALID;
            }
            long timestamp = timestamp(event.get("timestamp"));
            if (timestamp < 0 || timestamp > System.currentTimeMillis() + MAX_AHEAD_MS) {
                return PageView.INVALID;
            }
            return new PageView(user.asText(), page.asText(), timestamp);
        } catch (Exception malformed) {
            return PageView.INVALID;
        }
    }

    /** Epoch milliseconds, or -1 when `value` is not a timestamp. */
    static long timestamp(JsonNode value) {
        if (value == null) return -1;
        if (value.isIntegralNumber()) return value.asLong();
        if (!value.isTextual()) return -1;
        try {
            TemporalAccessor parsed = DateTimeFormatter.ISO_DATE_TIME.parseBest(
                value.asText(), OffsetDateTime::from, LocalDateTime::from);
            OffsetDateTime time = parsed instanceof OffsetDateTime offset
                ? offset
                : ((LocalDateTime) parsed).atOffset(ZoneOffset.UTC);
            return time.toInstant().toEpochMilli();
        } catch (DateTimeParseException notIso) {
            return -1;
        }
    }

    /** A page view's own time; a record that is not one keeps its partition's time. */
    static final class EventTime implements TimestampExtractor {
        @Override
        public long extract(ConsumerRecord<Object, Object> record, long partitionTime) {
            PageView view = (PageView) record.value();
            return view == PageView.INVALID ? Math.max(partitionTime, 0) : view.timestamp();
        }
    }
}
