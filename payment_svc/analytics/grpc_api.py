"""The admin RPCs of the sales read model: proto in, use case, proto out."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from common.grpc_types import ServicerContext
from common.money import Money
from common.proto_values import money_message, timestamp
from microcommerce.payment.v1 import sales_analytics_service_pb2 as pb
from payment_svc.analytics.service import Granularity, SalesAnalytics

_GRANULARITY = {pb.GRANULARITY_HOUR: Granularity.HOUR, pb.GRANULARITY_DAY: Granularity.DAY}


class SalesAnalyticsApi:
    """GetSales and ListTopProducts (admin only, declared in the protos)."""

    def __init__(self, analytics: SalesAnalytics) -> None:
        self._analytics = analytics

    async def GetSales(
        self, request: pb.GetSalesRequest, context: ServicerContext
    ) -> pb.GetSalesResponse:
        sales = await self._analytics.sales(
            _time(request.start_time), _time(request.end_time), _GRANULARITY[request.granularity]
        )
        response = pb.GetSalesResponse(
            periods=[
                pb.SalesPeriod(
                    start_time=timestamp(period.start),
                    orders_placed=period.placed,
                    orders_confirmed=period.confirmed,
                    orders_failed=[
                        pb.FailureCount(reason=reason, orders=orders)
                        for reason, orders in sorted(
                            period.failed.items(), key=lambda item: (-item[1], item[0])
                        )
                    ],
                    orders_cancelled=period.cancelled,
                    revenue=[money_message(money) for money in period.money(period.revenue)],
                    refunds=[money_message(money) for money in period.money(period.refunds)],
                )
                for period in sales.periods
            ]
        )
        if sales.as_of is not None:
            response.as_of.CopyFrom(timestamp(sales.as_of))
        return response

    async def ListTopProducts(
        self, request: pb.ListTopProductsRequest, context: ServicerContext
    ) -> pb.ListTopProductsResponse:
        top = await self._analytics.top_products(
            _time(request.start_time), _time(request.end_time), request.limit
        )
        response = pb.ListTopProductsResponse(
            products=[
                pb.ProductSales(
                    product_id=product.product_id,
                    units=product.units,
                    revenue=[
                        money_message(Money(amount, currency))
                        for currency, amount in sorted(product.revenue.items())
                    ],
                )
                for product in top.products
            ]
        )
        if top.as_of is not None:
            response.as_of.CopyFrom(timestamp(top.as_of))
        return response


def _time(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)
