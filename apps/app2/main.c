/* app2: the three-replica app behind Host app2.com; reload to watch the pod change. */
#include "app.h"

static const struct app_def app2 = {
    .name = "app2",
    .title = "Hello from app2",
    .tagline = "The second app: three replicas, round-robin. Reload to meet the next one.",
    .accent = "#1a7f37",
    .background = "linear-gradient(135deg,#dcf7e3,#92dba8)",
};

int
main(void)
{
    return app_main(&app2);
}
