/*
 * A JVM workload with known memory needs, for daytwo's demo and integration tests.
 *
 * Why: sizing a container together with its Java heap can only be checked against a JVM
 * whose live set and allocation rate are known. This program keeps --live-mib MiB
 * reachable for its whole life (the live set a collector finds after a full GC) and
 * allocates --alloc-mib-per-s MiB/s of short-lived garbage on top (what drives young
 * collections and GC overhead). It prints "ready" once the live set is built, then runs
 * for --seconds seconds (0 = until killed).
 *
 * Usage: java -Xmx256m -Xlog:gc*:file=gc.log -cp DIR Allocator
 *            --live-mib 30 --alloc-mib-per-s 20 --seconds 0
 */

import java.util.ArrayList;
import java.util.List;

public final class Allocator {
    private static final int MIB = 1024 * 1024;
    private static final int PAGE = 4096;
    // Below half a 1 MiB G1 region, so neither counts as a humongous object.
    private static final int LIVE_CHUNK = 256 * 1024;
    private static final int GARBAGE_CHUNK = 64 * 1024;
    private static final int TICK_MILLIS = 10;
    private static final int RECENT_SLOTS = 16;

    /** Recent garbage stays reachable for a few ticks so the JIT cannot elide it. */
    private static final byte[][] RECENT = new byte[RECENT_SLOTS][];

    private Allocator() {}

    private static byte[] touched(int size) {
        byte[] block = new byte[size];
        for (int offset = 0; offset < size; offset += PAGE) {
            block[offset] = 1;
        }
        return block;
    }

    private static void usage(String problem) {
        System.err.println("Allocator: " + problem);
        System.err.println(
            "usage: Allocator [--live-mib N] [--alloc-mib-per-s M] [--seconds S]");
        System.exit(2);
    }

    private static double parse(String flag, String value) {
        try {
            double parsed = Double.parseDouble(value);
            if (parsed < 0 || Double.isNaN(parsed) || Double.isInfinite(parsed)) {
                usage(flag + " must be a non-negative number, got " + value);
            }
            return parsed;
        } catch (NumberFormatException error) {
            usage(flag + " must be a number, got " + value);
            return 0;
        }
    }

    public static void main(String[] args) throws InterruptedException {
        double liveMib = 0;
        double allocMibPerSecond = 0;
        double seconds = 0;
        for (int index = 0; index < args.length; index++) {
            String flag = args[index];
            if (index + 1 >= args.length) {
                usage("missing value for " + flag);
            }
            String value = args[++index];
            switch (flag) {
                case "--live-mib" -> liveMib = parse(flag, value);
                case "--alloc-mib-per-s" -> allocMibPerSecond = parse(flag, value);
                case "--seconds" -> seconds = parse(flag, value);
                default -> usage("unknown flag " + flag);
            }
        }

        List<byte[]> live = new ArrayList<>();
        long liveBytes = Math.round(liveMib * MIB);
        for (long built = 0; built < liveBytes; built += LIVE_CHUNK) {
            live.add(touched((int) Math.min(LIVE_CHUNK, liveBytes - built)));
        }
        System.out.println("ready");
        System.out.flush();

        long started = System.nanoTime();
        long deadline = seconds > 0 ? started + Math.round(seconds * 1e9) : Long.MAX_VALUE;
        double bytesPerNano = allocMibPerSecond * MIB / 1e9;
        long allocated = 0;
        int slot = 0;
        while (System.nanoTime() < deadline) {
            long owed = Math.round((System.nanoTime() - started) * bytesPerNano);
            while (allocated < owed) {
                RECENT[slot] = touched(GARBAGE_CHUNK);
                slot = (slot + 1) % RECENT_SLOTS;
                allocated += GARBAGE_CHUNK;
            }
            Thread.sleep(TICK_MILLIS);
        }
        // Keep the live set reachable until the very end.
        if (live.size() < 0) {
            System.out.println(live.get(0)[0]);
        }
    }
}
